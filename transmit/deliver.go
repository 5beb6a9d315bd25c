package transmit

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
)

// worker delivers one pushed endpoint's events, on every instance: the
// endpoint's durable consumer hands each message to one of them at a time.
type worker struct {
	ep     atomic.Pointer[Endpoint]
	cancel context.CancelFunc

	lastSave time.Time // of progress; touched by the worker's goroutine only
}

// Run delivers every pushed endpoint's events until ctx ends: it follows
// the endpoints in the bucket and runs a worker for each one that is
// enabled or disabled (a disabled one's events are passed over); a paused
// one's wait.
func (t *Transmitter) Run(ctx context.Context) error {
	done, err := t.reg.Watch(ctx, func(id string, ep *Endpoint) { t.follow(ctx, id, ep) })
	if err != nil {
		return err
	}
	<-done
	t.mu.Lock()
	for id, w := range t.workers {
		w.cancel()
		delete(t.workers, id)
	}
	t.mu.Unlock()
	t.running.Wait()
	return nil
}

// follow starts, updates or stops the worker of endpoint id as it now is
// (nil: deleted).
func (t *Transmitter) follow(ctx context.Context, id string, ep *Endpoint) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.workers[id]
	if ep == nil || !ep.Pushed() || ep.Status == StatusPaused {
		if w != nil {
			w.cancel()
			delete(t.workers, id)
		}
		if ep == nil {
			t.obs.Forget(id, "")
		}
		return
	}
	if w != nil && w.ep.Load().Consumer == ep.Consumer {
		w.ep.Store(ep) // a new status, URL or secret: used from the next attempt
		return
	}
	if w != nil {
		w.cancel()
	}
	wctx, cancel := context.WithCancel(ctx)
	w = &worker{cancel: cancel}
	w.ep.Store(ep)
	t.workers[id] = w
	t.running.Add(1)
	go func() {
		defer t.running.Done()
		t.work(wctx, w)
	}()
}

// work runs the delivery loop of w until its ctx ends, making its consumer
// again (from the progress saved) if it disappeared while its endpoint is
// still there.
func (t *Transmitter) work(ctx context.Context, w *worker) {
	for ctx.Err() == nil {
		ep := w.ep.Load()
		err := t.store.Deliver(ctx, ep.Consumer, func(ctx context.Context, d eventstore.Delivery) eventstore.Verdict {
			return t.deliver(ctx, w, d)
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, eventstore.ErrDeliveryConsumerGone) {
			cur, _, gerr := t.reg.Get(ctx, ep.ID)
			if errors.Is(gerr, ErrNotFound) || (gerr == nil && cur.Consumer != ep.Consumer) {
				return // deleted: the watch stops this worker
			}
			if gerr == nil {
				from := max(ep.StartSeq, t.reg.progress(ctx, ep.ID)+1)
				t.log.Warn("transmit: the delivery consumer was gone; making it again", "endpoint", ep.ID, "from_seq", from)
				err = t.store.EnsureDeliveryConsumer(ctx, ep.Consumer, eventstore.TypeSubjects(ep.Types), from)
			} else {
				err = gerr
			}
		}
		if err != nil {
			t.log.Warn("transmit: delivery interrupted", "endpoint", ep.ID, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// deliver sends one message to w's endpoint and says whether it is done.
func (t *Transmitter) deliver(ctx context.Context, w *worker, d eventstore.Delivery) eventstore.Verdict {
	ep := w.ep.Load()
	// The endpoint as it is now, not as this instance's watch last saw it:
	// a pause, a new URL or secret, or a deletion counts from the moment
	// its request was answered.
	switch cur, _, err := t.reg.Get(ctx, ep.ID); {
	case errors.Is(err, ErrNotFound):
		return eventstore.Verdict{Done: true} // deleted: its consumer goes too
	case err == nil:
		ep = cur
	}
	seq := d.Record.Seq
	t.obs.Lag(ep.ID, ep.Kind, d.Pending+1)
	if ep.Status == StatusPaused {
		return eventstore.Verdict{Retry: time.Second} // held: this worker is stopping
	}
	if d.Record.Kind != domain.RecordEvent || ep.Status == StatusDisabled {
		t.done(ctx, w, ep, seq, d.Pending)
		return eventstore.Verdict{Done: true}
	}
	e := d.Record.Event
	err := t.send(ctx, ep, e)
	now := t.now()
	var perm *permanentError
	switch {
	case err == nil:
		t.obs.Delivered(ep.ID, ep.Kind, now.Sub(d.Stored))
	case errors.As(err, &perm) || now.Sub(d.Stored) >= t.cfg.RetryFor:
		t.obs.AttemptFailed(ep.ID, ep.Kind)
		t.obs.GaveUp(ep.ID, ep.Kind)
		t.log.Warn("transmit: delivery given up and recorded", "endpoint", ep.ID, "seq", seq, "event", e.Type(), "attempts", d.Attempt, "err", err)
		f := Failure{Endpoint: ep.ID, Seq: seq, EventID: e.ID, EventType: e.Type(), Attempts: d.Attempt, Error: err.Error(), Recorded: d.Stored.UTC(), FailedAt: now.UTC()}
		if rerr := t.reg.RecordFailure(ctx, f); rerr != nil {
			// Not recorded, so not given up: tried again.
			t.log.Error("transmit: recording a failure failed", "endpoint", ep.ID, "seq", seq, "err", rerr)
			return eventstore.Verdict{Retry: MaxBackoff}
		}
	default:
		t.obs.AttemptFailed(ep.ID, ep.Kind)
		retry := backoff(d.Attempt)
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > retry {
			retry = min(ra.after, MaxBackoff)
		}
		t.log.Info("transmit: delivery attempt failed; trying again", "endpoint", ep.ID, "seq", seq, "attempt", d.Attempt, "retry_in", retry, "err", err)
		return eventstore.Verdict{Retry: retry}
	}
	t.done(ctx, w, ep, seq, d.Pending)
	return eventstore.Verdict{Done: true}
}

// done notes that everything up to seq is delivered: in the lag, and in
// the progress kept at most every second (and whenever the endpoint has
// caught up).
func (t *Transmitter) done(ctx context.Context, w *worker, ep *Endpoint, seq, pending uint64) {
	t.obs.Lag(ep.ID, ep.Kind, pending)
	if now := time.Now(); pending == 0 || now.Sub(w.lastSave) >= time.Second {
		if err := t.reg.saveProgress(ctx, ep.ID, seq); err == nil {
			w.lastSave = now
		}
	}
}

// backoff is the wait before attempt n+1: 500 ms doubling, at most MaxBackoff.
func backoff(attempt uint64) time.Duration {
	d := 500 * time.Millisecond
	for i := uint64(1); i < attempt && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// permanentError: the receiver refused the event in a way another attempt
// cannot change (an SSF push answered 400 with an error code).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// retryAfterError: the receiver asked to wait (Retry-After).
type retryAfterError struct {
	msg   string
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.msg }

// send delivers e to ep: one webhook, or the stream's SETs of it (none if
// it makes no event the stream asked for).
func (t *Transmitter) send(ctx context.Context, ep *Endpoint, e domain.Event) error {
	userID, err := t.users.of(ctx, e)
	if err != nil {
		return err
	}
	switch ep.Kind {
	case KindWebhook:
		body, err := webhookBody(e, userID)
		if err != nil {
			return err
		}
		return t.postWebhook(ctx, ep, e.ID, body)
	case KindStream:
		for _, sig := range signals(t.issuer, e, userID, ep.Stream.EventsDelivered) {
			set, err := t.signSignal(sig, ep.Stream.Audience, t.now())
			if err != nil {
				return err
			}
			if err := t.pushSET(ctx, ep, set); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("transmit: endpoint %s of unknown kind", ep.ID)
}

// postWebhook sends one Standard Webhooks message: webhook-id is the event's
// id, the same at every attempt, for the receiver to deduplicate.
func (t *Transmitter) postWebhook(ctx context.Context, ep *Endpoint, id string, body []byte) error {
	now := t.now()
	secrets, err := t.reg.signingSecrets(ep, now)
	if err != nil {
		return err
	}
	h := WebhookHeaders(secrets, id, now, body)
	_, err = t.post(ctx, ep.URL, h, body)
	return err
}

// pushSET sends one SET by RFC 8935.
func (t *Transmitter) pushSET(ctx context.Context, ep *Endpoint, set string) error {
	h := http.Header{}
	h.Set("Content-Type", "application/secevent+jwt")
	h.Set("Accept", "application/json")
	if ep.Stream.AuthorizationHeader != "" {
		auth, err := t.reg.sealer.Open(authorizationName(ep.ID), ep.Stream.AuthorizationHeader)
		if err != nil {
			return fmt.Errorf("transmit: stream %s: the authorization header does not open: %w", ep.ID, err)
		}
		h.Set("Authorization", string(auth))
	}
	status, err := t.post(ctx, ep.URL, h, []byte(set))
	if err != nil && status == http.StatusBadRequest && !retryable(err) {
		return &permanentError{msg: err.Error()}
	}
	return err
}

// retryable reports whether an RFC 8935 error (a 400 whose err post
// quoted) may pass: access_denied and authentication_failed are about
// the credentials, which the receiver may put right; the other codes
// (invalid_request, invalid_key, invalid_issuer, invalid_audience) are
// about the SET, which another attempt does not change.
func retryable(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, `("access_denied")`) || strings.Contains(msg, `("authentication_failed")`)
}

// post sends body to target, and reads at most a little of the answer. An
// error never holds the URL (it may carry a credential) or the body.
func (t *Transmitter) post(ctx context.Context, target string, h http.Header, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("transmit: the endpoint URL does not make a request")
	}
	req.Header = h
	req.Header.Set("User-Agent", "sessionledger")
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST %s: %w", req.URL.Host, failureCause(err))
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, nil
	}
	msg := fmt.Sprintf("POST %s: HTTP %d", req.URL.Host, resp.StatusCode)
	var ssfErr struct {
		Err string `json:"err"`
	}
	if json.Unmarshal(answer, &ssfErr) == nil && ssfErr.Err != "" && len(ssfErr.Err) <= 64 {
		msg += " (" + strconv.Quote(ssfErr.Err) + ")"
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return resp.StatusCode, &retryAfterError{msg: msg, after: time.Duration(n) * time.Second}
		}
	}
	return resp.StatusCode, errors.New(msg)
}

func authorizationName(id string) string { return "endpoint/" + id + "/authorization" }

// failureCause is what a failed request is recorded and logged as: a kind
// of failure, never the addresses a name resolved to or the resolver's
// (an admin could otherwise map an internal network through the failures).
func failureCause(err error) error {
	var dnsErr *net.DNSError
	var tlsErr *tls.CertificateVerificationError
	var opErr *net.OpError
	switch {
	case errors.Is(err, ErrURLRefused):
		return errors.New("refused by the URL policy: the host resolves to a private, local or reserved address")
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return errors.New("timed out")
	case errors.As(err, &dnsErr):
		return errors.New("the name does not resolve")
	case errors.As(err, &tlsErr):
		return errors.New("the TLS certificate does not verify")
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return errors.New("the connection was refused or could not be made")
	}
	return errors.New("the request failed (connection, TLS or protocol)")
}
