package transmit

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
)

// Webhook is a webhook endpoint as the admin API shows it: never its
// secrets.
type Webhook struct {
	ID      string             `json:"id"`
	URL     string             `json:"url"`
	Events  []domain.EventType `json:"events"`
	Created time.Time          `json:"created"`
	// Secret is the signing secret, shown once: when the webhook is made
	// and when its secret is rotated.
	Secret string `json:"secret,omitempty"`
	// SecretsSigning counts the secrets that sign its messages now (2
	// while a rotated one still does).
	SecretsSigning int `json:"secrets_signing"`
}

func webhookView(ep *Endpoint, now time.Time) Webhook {
	n := 0
	for _, s := range ep.Secrets {
		if s.Expires.IsZero() || s.Expires.After(now) {
			n++
		}
	}
	return Webhook{ID: ep.ID, URL: ep.URL, Events: ep.Types, Created: ep.Created, SecretsSigning: n}
}

// parseEventTypes checks a webhook's event types: ledger event types, at
// least one, each once.
func parseEventTypes(events []string) ([]domain.EventType, error) {
	if len(events) == 0 {
		return nil, invalid("events must list at least one event type: %v", domain.Types)
	}
	var out []domain.EventType
	for _, e := range events {
		t := domain.EventType(e)
		if !slices.Contains(domain.Types, t) {
			if len(e) > 64 {
				e = e[:64] + "…"
			}
			return nil, invalid("unknown event type %q: the types are %v", e, domain.Types)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// CreateWebhook makes a webhook that gets events of the given types
// recorded from now on, and returns it with its signing secret.
func (t *Transmitter) CreateWebhook(ctx context.Context, rawURL string, events []string) (Webhook, error) {
	u, err := t.cfg.URLs.Check(rawURL)
	if err == nil {
		err = t.cfg.URLs.CheckResolved(ctx, u)
	}
	if err != nil {
		return Webhook{}, invalid("url: %v", err)
	}
	types, err := parseEventTypes(events)
	if err != nil {
		return Webhook{}, err
	}
	if err := t.checkRoom(ctx); err != nil {
		return Webhook{}, err
	}
	ep := &Endpoint{Kind: KindWebhook, URL: u.String(), Types: types}
	ep.ID = ulid.Make().String()
	secret, err := t.reg.NewSecret(ep, 0)
	if err != nil {
		return Webhook{}, err
	}
	if err := t.reg.Create(ctx, ep); err != nil {
		return Webhook{}, err
	}
	t.log.Info("transmit: webhook created", "endpoint", ep.ID, "events", len(types))
	w := webhookView(ep, t.now())
	w.Secret = secret
	return w, nil
}

func (t *Transmitter) webhook(ctx context.Context, id string) (*Endpoint, error) {
	ep, _, err := t.reg.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if ep.Kind != KindWebhook {
		return nil, ErrNotFound
	}
	return ep, nil
}

// GetWebhook returns the webhook id.
func (t *Transmitter) GetWebhook(ctx context.Context, id string) (Webhook, error) {
	ep, err := t.webhook(ctx, id)
	if err != nil {
		return Webhook{}, err
	}
	return webhookView(ep, t.now()), nil
}

// ListWebhooks returns every webhook, oldest first.
func (t *Transmitter) ListWebhooks(ctx context.Context) ([]Webhook, error) {
	all, err := t.reg.List(ctx, KindWebhook)
	if err != nil {
		return nil, err
	}
	now := t.now()
	out := []Webhook{}
	for _, ep := range all {
		out = append(out, webhookView(ep, now))
	}
	return out, nil
}

// DeleteWebhook deletes the webhook id and what it had not delivered.
func (t *Transmitter) DeleteWebhook(ctx context.Context, id string) error {
	if _, err := t.webhook(ctx, id); err != nil {
		return err
	}
	t.log.Info("transmit: webhook deleted", "endpoint", id)
	return t.reg.Delete(ctx, id)
}

// RotateSecret gives the webhook id a new signing secret, returned once;
// the previous one keeps signing beside it for overlap, so that a receiver
// can switch without losing a message.
func (t *Transmitter) RotateSecret(ctx context.Context, id string, overlap time.Duration) (Webhook, error) {
	if _, err := t.webhook(ctx, id); err != nil {
		return Webhook{}, err
	}
	var secret string
	ep, err := t.reg.Update(ctx, id, func(ep *Endpoint) error {
		var err error
		secret, err = t.reg.NewSecret(ep, overlap)
		return err
	})
	if err != nil {
		return Webhook{}, err
	}
	t.log.Info("transmit: webhook secret rotated", "endpoint", id, "previous_signs_for", overlap)
	w := webhookView(ep, t.now())
	w.Secret = secret
	return w, nil
}

// EndpointState is how delivery to one endpoint stands.
type EndpointState struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	URL    string `json:"url,omitempty"`
	Status string `json:"status"`
	Method string `json:"method,omitempty"` // of a stream
	// Pending counts the events stored and not yet delivered (pushed
	// endpoints).
	Pending uint64 `json:"pending"`
	// DeliveredThrough is the stream sequence up to which every event is
	// delivered (or given up).
	DeliveredThrough uint64 `json:"delivered_through"`
	Failures         int    `json:"failures"`
}

// Deliveries returns how delivery stands for every endpoint.
func (t *Transmitter) Deliveries(ctx context.Context) ([]EndpointState, error) {
	all, err := t.reg.List(ctx, "")
	if err != nil {
		return nil, err
	}
	out := []EndpointState{}
	for _, ep := range all {
		s := EndpointState{ID: ep.ID, Kind: ep.Kind, URL: ep.URL, Status: ep.Status}
		if ep.Stream != nil {
			s.Method = ep.Stream.Method
		}
		if ep.Pushed() {
			info, err := t.store.DeliveryInfo(ctx, ep.Consumer)
			if err != nil && !errors.Is(err, eventstore.ErrNotFound) {
				return nil, err
			}
			s.Pending, s.DeliveredThrough = info.Pending+info.AckPending, info.AckFloor
		} else if st, _, err := t.loadPoll(ctx, ep); err == nil {
			s.DeliveredThrough = st.Cursor
		}
		f, err := t.reg.Failures(ctx, ep.ID)
		if err != nil {
			return nil, err
		}
		s.Failures = len(f)
		out = append(out, s)
	}
	return out, nil
}

// Failures returns the deliveries to endpoint id given up on.
func (t *Transmitter) Failures(ctx context.Context, id string) ([]Failure, error) {
	if _, _, err := t.reg.Get(ctx, id); err != nil {
		return nil, err
	}
	return t.reg.Failures(ctx, id)
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	Delivered int       `json:"delivered"`
	Failed    []Failure `json:"failed"`
}

// Replay sends endpoint id's recorded failures again, once each, in stream
// order, until ctx ends: those delivered are forgotten, the others stay
// recorded with the new error.
func (t *Transmitter) Replay(ctx context.Context, id string) (ReplayResult, error) {
	ep, _, err := t.reg.Get(ctx, id)
	if err != nil {
		return ReplayResult{}, err
	}
	if !ep.Pushed() {
		return ReplayResult{}, invalid("a polled stream's events wait for its receiver; nothing is replayed")
	}
	failures, err := t.reg.Failures(ctx, id)
	if err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Failed: []Failure{}}
	for _, f := range failures {
		if ctx.Err() != nil {
			res.Failed = append(res.Failed, f)
			continue
		}
		recs, err := t.store.ReadRecords(ctx, eventstore.TypeSubjects(ep.Types), f.Seq-1, 1, 0)
		if err != nil {
			return res, err
		}
		if len(recs) == 0 || recs[0].Seq != f.Seq || recs[0].Kind != domain.RecordEvent {
			f.Error = "the event is no longer in the stream"
			res.Failed = append(res.Failed, f)
			continue
		}
		if err := t.send(ctx, ep, recs[0].Event); err != nil {
			f.Attempts++
			f.Error, f.FailedAt = err.Error(), t.now().UTC()
			if rerr := t.reg.RecordFailure(ctx, f); rerr != nil {
				return res, rerr
			}
			res.Failed = append(res.Failed, f)
			continue
		}
		if err := t.reg.ForgetFailure(ctx, id, f.Seq); err != nil {
			return res, err
		}
		res.Delivered++
	}
	t.log.Info("transmit: failures replayed", "endpoint", id, "delivered", res.Delivered, "failed", len(res.Failed))
	return res, nil
}
