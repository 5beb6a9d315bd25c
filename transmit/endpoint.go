package transmit

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
)

// Kinds of endpoints.
const (
	KindWebhook = "webhook" // Standard Webhooks, any chosen ledger event types
	KindStream  = "ssf"     // an SSF stream: SETs, pushed or polled
)

// Statuses of an endpoint (the SSF stream statuses; a webhook is enabled).
const (
	StatusEnabled  = "enabled"  // delivered
	StatusPaused   = "paused"   // held: delivered once enabled again
	StatusDisabled = "disabled" // neither delivered nor held
)

// Errors of the registry, for the API to map.
var (
	ErrNotFound = errors.New("transmit: no such endpoint")
	ErrInvalid  = errors.New("transmit: invalid request")
)

// Endpoint is a webhook or an SSF stream, as kept in the delivery bucket.
type Endpoint struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	URL    string `json:"url,omitempty"` // where it is pushed; empty for a polled stream
	Status string `json:"status"`
	// StatusReason is the reason given with the last status change.
	StatusReason string `json:"status_reason,omitempty"`
	// Types are the ledger event types its consumer reads.
	Types []domain.EventType `json:"types"`
	// Consumer is its durable consumer's name: random, so that readers of
	// the stream cannot guess it.
	Consumer string    `json:"consumer"`
	StartSeq uint64    `json:"start_seq"` // the first stream sequence it gets
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	// Secrets are a webhook's signing secrets, sealed, newest first; an
	// older one signs too until it expires (rotation).
	Secrets []SealedSecret `json:"secrets,omitempty"`
	// Stream is an SSF stream's configuration.
	Stream *StreamConfig `json:"stream,omitempty"`
	// LastVerification is when the last verification event was asked for.
	LastVerification time.Time `json:"last_verification,omitzero"`
}

// SealedSecret is a webhook signing secret as stored.
type SealedSecret struct {
	Sealed  string    `json:"sealed"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: the current one
}

// StreamConfig is what an SSF stream has beside an endpoint's fields.
type StreamConfig struct {
	Receiver        string   `json:"receiver,omitempty"` // the receiver that made it; empty: the admin
	Audience        []string `json:"aud"`
	EventsRequested []string `json:"events_requested"`
	EventsDelivered []string `json:"events_delivered"`
	Method          string   `json:"method"` // DeliveryPush or DeliveryPoll
	// AuthorizationHeader is sent with each push, sealed.
	AuthorizationHeader string `json:"authorization_header,omitempty"`
	Description         string `json:"description,omitempty"`
}

// Pushed reports whether the endpoint's events are sent to it (a webhook
// or a push stream), by a durable consumer.
func (ep *Endpoint) Pushed() bool {
	return ep.Kind == KindWebhook || (ep.Stream != nil && ep.Stream.Method == DeliveryPush)
}

// Registry keeps the endpoints in the delivery bucket.
type Registry struct {
	bucket *eventstore.DeliveryBucket
	store  *eventstore.Store
	sealer *Sealer
	now    func() time.Time
}

// NewRegistry returns the registry over bucket, whose endpoints read store.
func NewRegistry(bucket *eventstore.DeliveryBucket, store *eventstore.Store, sealer *Sealer) *Registry {
	return &Registry{bucket: bucket, store: store, sealer: sealer, now: time.Now}
}

// Keys in the delivery bucket.
const (
	endpointPrefix = "endpoint."
	receiverPrefix = "receiver."
	failurePrefix  = "failure."
	pollPrefix     = "poll."
	progressPrefix = "progress."
)

func endpointKey(id string) string { return endpointPrefix + id }
func failureKey(id string, seq uint64) string {
	return fmt.Sprintf("%s%s.%020d", failurePrefix, id, seq)
}

// validID reports whether id can be an endpoint's or a receiver's id: what
// the registry makes (a ULID), so that a path parameter never reaches the
// bucket as a wildcard or a dotted key.
func validID(id string) bool {
	_, err := ulid.ParseStrict(id)
	return err == nil && len(id) == ulid.EncodedSize
}

// randomName is a fresh durable consumer name.
func randomName() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "delivery_" + hex.EncodeToString(b)
}

// Create stores a new endpoint, filling in its id, consumer and start, and
// creates its durable consumer when it is pushed: it gets every event
// recorded from now on.
func (r *Registry) Create(ctx context.Context, ep *Endpoint) error {
	last, err := r.store.LastSeq(ctx)
	if err != nil {
		return err
	}
	now := r.now().UTC()
	if ep.ID == "" {
		ep.ID = ulid.Make().String()
	}
	ep.Consumer = randomName()
	ep.StartSeq = last + 1
	ep.Created, ep.Updated = now, now
	if ep.Status == "" {
		ep.Status = StatusEnabled
	}
	if ep.Pushed() {
		if err := r.store.EnsureDeliveryConsumer(ctx, ep.Consumer, eventstore.TypeSubjects(ep.Types), ep.StartSeq); err != nil {
			return err
		}
	}
	b, err := json.Marshal(ep)
	if err != nil {
		return err
	}
	if _, err := r.bucket.Create(ctx, endpointKey(ep.ID), b); err != nil {
		_ = r.store.DeleteDeliveryConsumer(context.WithoutCancel(ctx), ep.Consumer)
		return err
	}
	return nil
}

// Get returns the endpoint id (ErrNotFound if none) and its revision.
func (r *Registry) Get(ctx context.Context, id string) (*Endpoint, uint64, error) {
	if !validID(id) {
		return nil, 0, ErrNotFound
	}
	b, rev, err := r.bucket.Get(ctx, endpointKey(id))
	if err != nil {
		return nil, 0, notFound(err)
	}
	var ep Endpoint
	if err := json.Unmarshal(b, &ep); err != nil {
		return nil, 0, fmt.Errorf("transmit: endpoint %s: %w", id, err)
	}
	return &ep, rev, nil
}

// List returns the endpoints of kind (every kind when empty), oldest first.
func (r *Registry) List(ctx context.Context, kind string) ([]*Endpoint, error) {
	all, err := r.bucket.List(ctx, endpointPrefix+"*")
	if err != nil {
		return nil, err
	}
	var out []*Endpoint
	for key, b := range all {
		var ep Endpoint
		if err := json.Unmarshal(b, &ep); err != nil {
			return nil, fmt.Errorf("transmit: %s: %w", key, err)
		}
		if kind == "" || ep.Kind == kind {
			out = append(out, &ep)
		}
	}
	slices.SortFunc(out, func(a, b *Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Update changes the endpoint id with change, which may be called more
// than once (when another writer came first), and returns it as stored.
func (r *Registry) Update(ctx context.Context, id string, change func(*Endpoint) error) (*Endpoint, error) {
	for {
		ep, rev, err := r.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := change(ep); err != nil {
			return nil, err
		}
		ep.Updated = r.now().UTC()
		b, err := json.Marshal(ep)
		if err != nil {
			return nil, err
		}
		_, err = r.bucket.Update(ctx, endpointKey(id), b, rev)
		if errors.Is(err, eventstore.ErrChanged) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return ep, nil
	}
}

// Delete removes the endpoint id, its consumer, its recorded failures and
// its positions.
func (r *Registry) Delete(ctx context.Context, id string) error {
	ep, _, err := r.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := r.bucket.Delete(ctx, endpointKey(id)); err != nil {
		return err
	}
	// The record is gone: what is left below is unreachable, and is cleaned
	// up as well as possible.
	ctx = context.WithoutCancel(ctx)
	_ = r.store.DeleteDeliveryConsumer(ctx, ep.Consumer)
	_ = r.bucket.Delete(ctx, pollPrefix+id)
	_ = r.bucket.Delete(ctx, progressPrefix+id)
	if failures, err := r.bucket.List(ctx, failurePrefix+id+".*"); err == nil {
		for key := range failures {
			_ = r.bucket.Delete(ctx, key)
		}
	}
	return nil
}

// Watch calls fn with every endpoint and every change after (nil and its id:
// deleted), until ctx ends.
func (r *Registry) Watch(ctx context.Context, fn func(id string, ep *Endpoint)) (<-chan struct{}, error) {
	return r.bucket.Watch(ctx, endpointPrefix+"*", func(key string, value []byte) {
		id := strings.TrimPrefix(key, endpointPrefix)
		if value == nil {
			fn(id, nil)
			return
		}
		var ep Endpoint
		if err := json.Unmarshal(value, &ep); err != nil {
			return
		}
		fn(id, &ep)
	})
}

// NewSecret adds a fresh signing secret to a webhook and returns it: the
// only time it is shown. The older ones keep signing until previousFor has
// passed at most (not at all when 0), and expired ones are dropped.
func (r *Registry) NewSecret(ep *Endpoint, previousFor time.Duration) (string, error) {
	now := r.now().UTC()
	secret, err := NewWebhookSecret()
	if err != nil {
		return "", err
	}
	sealed, err := r.sealer.Seal(secretName(ep.ID, now), []byte(secret))
	if err != nil {
		return "", err
	}
	kept := []SealedSecret{{Sealed: sealed, Created: now}}
	until := now.Add(previousFor)
	for _, s := range ep.Secrets {
		if s.Expires.IsZero() || s.Expires.After(until) {
			s.Expires = until // no older secret signs longer than this overlap
		}
		if s.Expires.After(now) {
			kept = append(kept, s)
		}
	}
	ep.Secrets = kept
	return secret, nil
}

func secretName(id string, created time.Time) string {
	return fmt.Sprintf("endpoint/%s/secret/%d", id, created.UnixNano())
}

// signingSecrets returns the webhook's secrets that sign at now, newest
// first.
func (r *Registry) signingSecrets(ep *Endpoint, now time.Time) ([][]byte, error) {
	var out [][]byte
	for _, s := range ep.Secrets {
		if !s.Expires.IsZero() && !s.Expires.After(now) {
			continue
		}
		b, err := r.sealer.Open(secretName(ep.ID, s.Created), s.Sealed)
		if err != nil {
			return nil, fmt.Errorf("transmit: webhook %s: a signing secret does not open: %w", ep.ID, err)
		}
		key, err := ParseWebhookSecret(string(b))
		if err != nil {
			return nil, err
		}
		out = append(out, key)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("transmit: webhook %s has no signing secret", ep.ID)
	}
	return out, nil
}

// Failure is a delivery given up on: recorded for an operator to see and
// replay.
type Failure struct {
	Endpoint  string           `json:"endpoint"`
	Seq       uint64           `json:"sequence"`
	EventID   string           `json:"event_id,omitempty"`
	EventType domain.EventType `json:"event_type,omitempty"`
	Attempts  uint64           `json:"attempts"`
	Error     string           `json:"error"`
	Recorded  time.Time        `json:"recorded"`  // when the stream stored the event
	FailedAt  time.Time        `json:"failed_at"` // when delivery was given up
}

// RecordFailure keeps f (one per endpoint and sequence: a later one
// replaces it).
func (r *Registry) RecordFailure(ctx context.Context, f Failure) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return r.bucket.Put(ctx, failureKey(f.Endpoint, f.Seq), b)
}

// Failures returns the endpoint's recorded failures in stream order.
func (r *Registry) Failures(ctx context.Context, id string) ([]Failure, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	all, err := r.bucket.List(ctx, failurePrefix+id+".*")
	if err != nil {
		return nil, err
	}
	out := make([]Failure, 0, len(all))
	for _, b := range all {
		var f Failure
		if err := json.Unmarshal(b, &f); err == nil {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b Failure) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// ForgetFailure removes the failure recorded for id at seq.
func (r *Registry) ForgetFailure(ctx context.Context, id string, seq uint64) error {
	return r.bucket.Delete(ctx, failureKey(id, seq))
}

// progress is how far an endpoint's deliveries have come, kept so that a
// consumer lost (deleted by someone with the ledger's credentials) is made
// again from there rather than from the start.
func (r *Registry) progress(ctx context.Context, id string) uint64 {
	b, _, err := r.bucket.Get(ctx, progressPrefix+id)
	if err != nil {
		return 0
	}
	var seq uint64
	_, _ = fmt.Sscan(string(b), &seq)
	return seq
}

func (r *Registry) saveProgress(ctx context.Context, id string, seq uint64) error {
	return r.bucket.Put(ctx, progressPrefix+id, []byte(fmt.Sprint(seq)))
}

// notFound maps the bucket's ErrNotFound to the registry's.
func notFound(err error) error {
	if errors.Is(err, eventstore.ErrNotFound) {
		return ErrNotFound
	}
	return err
}
