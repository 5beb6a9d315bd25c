// Package eventstore keeps the ledger's events in a NATS JetStream stream. It is
// the only package that imports nats.
package eventstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
)

// ErrUndecodable marks a stream message that is not a known event: following
// must stop there, since skipping it would lose state silently.
var ErrUndecodable = errors.New("undecodable event in the stream")

// Stream layout.
const (
	StreamName    = "LEDGER"
	SubjectPrefix = "ledger"
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id, which
	// bounds how long a publish whose ack was lost can be retried safely.
	DuplicateWindow = 2 * time.Minute
)

// JetStream API error codes the store handles.
const (
	errWrongLastSequence         = 10071 // expected last sequence did not match (R1, and R3 at times)
	errDuplicateInProcess        = 10158 // the same Nats-Msg-Id is being stored: retry
	errExpectedLastSeqNotReady   = 10163 // per-subject check temporarily unavailable: retry
	errWrongLastSequenceConstant = 10164 // expected last sequence did not match (replicated)
)

// SessionSubject is the subject of a session event:
// ledger.<user-key>.<session-id>.<name>, name being the type without "session.".
// User events go to ledger.<user-key>.user.<name>.
func SessionSubject(e domain.Event) string {
	t := string(e.Type())
	if e.Type().IsUserEvent() {
		return SubjectPrefix + "." + e.UserKey + ".user." + strings.TrimPrefix(t, "user.")
	}
	return SubjectPrefix + "." + e.UserKey + "." + e.SessionID + "." + strings.TrimPrefix(t, "session.")
}

// UserFilter matches every event of one user, session and user events alike.
func UserFilter(userKey string) string { return SubjectPrefix + "." + userKey + ".>" }

// Revocation subjects a subscriber listens on to drop revoked sessions.
const (
	SubjectSessionRevoked = SubjectPrefix + ".*.*.revoked"
	SubjectUserEvents     = SubjectPrefix + ".*.user.>"
)

// Config is the stream configuration the ledger creates or expects.
type Config struct {
	Replicas int // 1 for the embedded server, 3 recommended in a cluster
}

func (c Config) stream() jetstream.StreamConfig {
	r := c.Replicas
	if r < 1 {
		r = 1
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "sessionledger events (append-only)",
		Subjects:    []string{SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxAge:      0,
		Replicas:    r,
		Duplicates:  DuplicateWindow,
		DenyDelete:  true,
		DenyPurge:   true,
	}
}

// Store is a domain.EventStore on JetStream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	// OnRetry, if set before use, is called for each publish sent again.
	OnRetry func()
}

var _ domain.EventStore = (*Store)(nil)

// Open creates the stream if it does not exist, or checks that the existing one
// is configured as the ledger needs. It never changes an existing stream.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventstore: %w", err)
	}
	want := cfg.stream()
	stream, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, want)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: open stream %s: %w", StreamName, err)
	}
	if err := checkConfig(stream.CachedInfo().Config, want); err != nil {
		return nil, err
	}
	return &Store{js: js, stream: stream}, nil
}

// checkConfig reports how an existing stream differs from what the ledger needs.
func checkConfig(got, want jetstream.StreamConfig) error {
	var diffs []string
	if len(got.Subjects) != 1 || got.Subjects[0] != want.Subjects[0] {
		diffs = append(diffs, fmt.Sprintf("subjects %v (want %v)", got.Subjects, want.Subjects))
	}
	if got.Storage != want.Storage {
		diffs = append(diffs, fmt.Sprintf("storage %s (want %s)", got.Storage, want.Storage))
	}
	if got.Retention != want.Retention {
		diffs = append(diffs, fmt.Sprintf("retention %s (want %s)", got.Retention, want.Retention))
	}
	if got.Replicas != want.Replicas {
		diffs = append(diffs, fmt.Sprintf("replicas %d (want %d)", got.Replicas, want.Replicas))
	}
	if !got.DenyDelete || !got.DenyPurge {
		diffs = append(diffs, "deny_delete and deny_purge must both be on")
	}
	if got.MaxAge != 0 || got.MaxMsgs > 0 || got.MaxBytes > 0 || got.MaxMsgsPerSubject > 0 {
		diffs = append(diffs, "limits (max age, messages, bytes, per-subject) would delete events")
	}
	if got.AllowMsgTTL {
		diffs = append(diffs, "per-message TTL must be off")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("eventstore: stream %s exists with a configuration the ledger cannot use (it changes nothing itself): %s", StreamName, strings.Join(diffs, "; "))
	}
	return nil
}

// Every request to the stream gets requestTimeout per attempt and is retried
// (at most maxAttempts times, within the caller's context) while the stream is
// unreachable: a request sent to a leader that just died is abandoned after a
// second, not after the caller's whole budget, and goes to the new leader.
const (
	maxAttempts    = 8
	requestTimeout = time.Second
)

// withRetry runs fn with a per-attempt timeout, retrying retryable errors.
func withRetry[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	var v T
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 && !pause(ctx, attempt) {
			break
		}
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		v, err = fn(actx)
		cancel()
		if err == nil || !retryable(err) {
			return v, err
		}
	}
	return v, err
}

// pause waits before retry attempt n; false if ctx ended first.
func pause(ctx context.Context, n int) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(n) * 50 * time.Millisecond):
		return true
	}
}

// Append implements domain.EventStore. A publish whose ack is lost is retried
// with the same Nats-Msg-Id; when the expected-sequence check fails, the last
// event of the user is read back and compared by id, since it may be this very
// event stored by an attempt whose ack was lost.
func (s *Store) Append(ctx context.Context, e domain.Event, expectedUserSeq uint64) (uint64, error) {
	data, err := domain.EncodeEvent(e)
	if err != nil {
		return 0, fmt.Errorf("eventstore: append %s: %w", e.ID, err)
	}
	filter := UserFilter(e.UserKey)
	msg := &nats.Msg{Subject: SessionSubject(e), Data: data, Header: nats.Header{}}
	opts := []jetstream.PublishOpt{
		jetstream.WithMsgID(e.ID),
		jetstream.WithExpectStream(StreamName),
		jetstream.WithExpectLastSequenceForSubject(expectedUserSeq, filter),
	}
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if !pause(ctx, attempt) {
				return 0, fmt.Errorf("eventstore: append %s %s: %w (%v)", e.Type(), e.ID, domain.ErrUnavailable, ctx.Err())
			}
			if s.OnRetry != nil {
				s.OnRetry()
			}
		}
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		ack, err := s.js.PublishMsg(actx, msg, opts...)
		cancel()
		if err == nil {
			return ack.Sequence, nil // a duplicate ack carries the sequence of the first copy
		}
		lastErr = err
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			switch apiErr.ErrorCode {
			case errWrongLastSequence, errWrongLastSequenceConstant:
				// An earlier attempt (this call's or a caller's retry) may
				// have landed with its ack lost: then the user's last event is ours.
				if seq, ok := s.landed(ctx, filter, e.ID); ok {
					return seq, nil
				}
				return 0, fmt.Errorf("eventstore: append %s %s: %w", e.Type(), e.ID, domain.ErrConflict)
			case errDuplicateInProcess, errExpectedLastSeqNotReady:
				continue
			}
			return 0, fmt.Errorf("eventstore: append %s %s: %w", e.Type(), e.ID, err)
		}
		if !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	return 0, fmt.Errorf("eventstore: append %s %s: %w (%v)", e.Type(), e.ID, domain.ErrUnavailable, lastErr)
}

// retryable reports whether a publish error leaves the outcome unknown or the
// stream momentarily unreachable, so that the same message may be sent again.
func retryable(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting)
}

// landed reports whether the user's last stored event is the one with id.
func (s *Store) landed(ctx context.Context, filter, id string) (uint64, bool) {
	m, err := withRetry(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.stream.GetLastMsgForSubject(ctx, filter)
	})
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != id {
		return 0, false
	}
	return m.Sequence, true
}

// LastUserEvent implements domain.EventStore.
func (s *Store) LastUserEvent(ctx context.Context, userKey string) (uint64, [32]byte, error) {
	m, err := s.lastMsg(ctx, UserFilter(userKey))
	if err != nil || m == nil {
		return 0, [32]byte{}, err
	}
	return m.Sequence, sha256.Sum256(m.Data), nil
}

// LastSessionSeq implements domain.EventStore.
func (s *Store) LastSessionSeq(ctx context.Context, sessionID string) (uint64, error) {
	if !domain.ValidSessionID(sessionID) {
		return 0, nil
	}
	return s.lastSeqFor(ctx, sessionFilter(sessionID))
}

// sessionFilter matches a session's own events.
func sessionFilter(sessionID string) string { return SubjectPrefix + ".*." + sessionID + ".*" }

func (s *Store) lastSeqFor(ctx context.Context, filter string) (uint64, error) {
	m, err := s.lastMsg(ctx, filter)
	if err != nil || m == nil {
		return 0, err
	}
	return m.Sequence, nil
}

// lastMsg returns the last message matching filter, nil if there is none.
func (s *Store) lastMsg(ctx context.Context, filter string) (*jetstream.RawStreamMsg, error) {
	m, err := withRetry(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.stream.GetLastMsgForSubject(ctx, filter)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: last message: %w (%v)", domain.ErrUnavailable, err)
	}
	return m, nil
}

// LastSeq returns the stream's last sequence.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventstore: stream info: %w (%v)", domain.ErrUnavailable, err)
	}
	return info.State.LastSeq, nil
}

// SessionHistory implements domain.EventStore.
func (s *Store) SessionHistory(ctx context.Context, sessionID string) ([]domain.Event, error) {
	if !domain.ValidSessionID(sessionID) {
		return nil, domain.ErrSessionNotFound
	}
	own := sessionFilter(sessionID)
	last, err := s.lastSeqFor(ctx, own)
	if err != nil {
		return nil, err
	}
	if last == 0 {
		return nil, domain.ErrSessionNotFound
	}
	var events []domain.Event
	err = s.read(ctx, own, 1, last, func(e domain.Event) bool {
		events = append(events, e)
		return true
	})
	if err != nil {
		return nil, err
	}
	// A session ended by a user event (revoke-all, deactivation) has no event
	// of its own saying so: add the first such event after its issue.
	var st domain.Session
	for _, e := range events {
		_ = st.Apply(e)
	}
	if !st.Live() {
		return events, nil
	}
	userFilter := SubjectPrefix + "." + st.UserKey + ".user.*"
	lastUser, err := s.lastSeqFor(ctx, userFilter)
	if err != nil || lastUser <= st.IssuedSeq {
		return events, err
	}
	err = s.read(ctx, userFilter, st.IssuedSeq+1, lastUser, func(e domain.Event) bool {
		switch e.Type() {
		case domain.TypeUserSessionsRevoked, domain.TypeUserDeactivated:
			events = append(events, e)
			return false
		}
		return true
	})
	return events, err
}

// read delivers the events matching filter from startSeq up to lastSeq, in
// order, until fn returns false.
func (s *Store) read(ctx context.Context, filter string, startSeq, lastSeq uint64, fn func(domain.Event) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := consume(ctx, s.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    startSeq,
	}, func(e domain.Event) (bool, error) {
		return fn(e) && e.Seq < lastSeq, nil
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("eventstore: read %s: %w (%v)", filter, domain.ErrUnavailable, err)
	}
	return fmt.Errorf("eventstore: read %s: %w", filter, err)
}

// consume runs an ordered consumer on stream with cfg and delivers its events
// in stream order until fn returns false or an error, or ctx ends. A message
// that does not decode is an error: nothing is skipped silently.
func consume(ctx context.Context, stream jetstream.Stream, cfg jetstream.OrderedConsumerConfig, fn func(domain.Event) (more bool, err error)) error {
	return consumeMsgs(ctx, stream, cfg, nil, func(msg jetstream.Msg) (bool, error) {
		e, err := decode(msg)
		if err != nil {
			return false, err
		}
		return fn(e)
	})
}

// consumeMsgs is consume for callers that need the message metadata too.
// started, if not nil, learns how many messages matched when the consumer was
// created, and ends the loop at once by returning true.
func consumeMsgs(ctx context.Context, stream jetstream.Stream, cfg jetstream.OrderedConsumerConfig, started func(pending uint64) (stop bool), fn func(jetstream.Msg) (more bool, err error)) error {
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	// Short pulls and heartbeats: a consumer lost with its server (failover)
	// is noticed and recreated within about a second, not after the defaults'
	// ten, which matters because clients retry within the reuse grace window.
	it, err := cons.Messages(jetstream.PullMaxMessages(1024), jetstream.PullExpiry(2*time.Second), jetstream.PullHeartbeat(500*time.Millisecond))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	if info := cons.CachedInfo(); started != nil && info != nil && started(info.NumPending) {
		return nil
	}
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if more, err := fn(msg); err != nil || !more {
			return err
		}
	}
}

// decode turns a stream message into an event with its sequence.
func decode(msg jetstream.Msg) (domain.Event, error) {
	md, err := msg.Metadata()
	if err != nil {
		return domain.Event{}, fmt.Errorf("eventstore: message metadata: %w", err)
	}
	e, err := domain.DecodeEventWith(msg.Data(), gojson.Unmarshal)
	if err != nil {
		return domain.Event{}, fmt.Errorf("eventstore: sequence %d: %w: %w", md.Sequence.Stream, ErrUndecodable, err)
	}
	e.Seq = md.Sequence.Stream
	return e, nil
}

// Follow delivers every event after afterSeq to apply, in stream order, and
// keeps following new ones until ctx ends or apply fails. A message that does
// not decode stops it with an error: nothing is skipped silently.
func (s *Store) Follow(ctx context.Context, afterSeq uint64, apply func(domain.Event) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if afterSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, afterSeq+1
	}
	err := consume(ctx, s.stream, cfg, func(e domain.Event) (bool, error) { return true, apply(e) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("eventstore: follow: %w", err)
	}
	return err
}
