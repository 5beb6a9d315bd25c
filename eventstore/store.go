// Package eventstore keeps the ledger's events in a NATS JetStream stream and
// is the service's only package that imports nats: the connection (conn.go),
// the subject layout (subjects.go), the writer's store (store.go), reading
// the stream in order (read.go), the read-only revocation feed and replay for
// verifiers and auditors (feed.go), and projection snapshots (snapshots.go).
package eventstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// JetStream API error codes the store handles.
const (
	errWrongLastSequence         = 10071 // expected last sequence did not match (R1, and R3 at times)
	errDuplicateInProcess        = 10158 // the same Nats-Msg-Id is being stored: retry
	errExpectedLastSeqNotReady   = 10163 // per-subject check temporarily unavailable: retry
	errWrongLastSequenceConstant = 10164 // expected last sequence did not match (replicated)
	errClusterNotAvailable       = 10008 // no stream leader at the moment (an election): retry
)

// Config is the stream configuration the ledger creates or expects.
type Config struct {
	Replicas int // 1 for the embedded server, 3 recommended in a cluster
	// Tags tag every appended message, and only messages with a valid tag
	// are read back as the ledger's (see Record). Nil: no tagging and no
	// checks, for tests of the store alone.
	Tags *integrity.TagKeys
	// TrustUntaggedThrough accepts messages without a tag up to this stream
	// sequence: the history a ledger older than tags wrote, which an operator
	// vouches for once (--trust-untagged-through).
	TrustUntaggedThrough uint64
	// MustExist refuses to create the stream (domain.ErrHistoryLost): the
	// caller knows that it existed.
	MustExist bool
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
	js      jetstream.JetStream
	stream  jetstream.Stream
	cfg     Config
	created time.Time // when the stream opened was created: it names that stream
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
	if errors.Is(err, jetstream.ErrStreamNotFound) && cfg.MustExist {
		return nil, fmt.Errorf("eventstore: %w: the stream %s does not exist, but it did", domain.ErrHistoryLost, StreamName)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, want)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: open stream %s: %w", StreamName, err)
	}
	if err := checkConfig(stream.CachedInfo().Config, want); err != nil {
		return nil, err
	}
	return &Store{js: js, stream: stream, cfg: cfg, created: stream.CachedInfo().Created}, nil
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
	if got.AllowDirect || got.MirrorDirect {
		// Any replica answers a direct get, however far behind it is; the
		// ledger's lookups must be answered by the stream leader.
		diffs = append(diffs, "direct get must be off (allow_direct, mirror_direct)")
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
// message under the expectation subjects is read back and compared by id,
// since it may be this very event stored by an attempt whose ack was lost.
//
// The expectation goes both into the event (expectseq, which the tag
// covers) and into the headers the stream enforces; readers check that the
// two agree (reader.record), so a stored event cannot be stored again
// elsewhere: its expectation no longer holds once it is stored.
func (s *Store) Append(ctx context.Context, e domain.Event) (uint64, error) {
	if e.Expect == nil {
		return 0, fmt.Errorf("eventstore: append %s %s: no expectation", e.Type(), e.ID)
	}
	data, err := domain.EncodeEvent(e)
	if err != nil {
		return 0, fmt.Errorf("eventstore: append %s: %w", e.ID, err)
	}
	filter := ExpectFilter(e)
	msg := s.tagged(SessionSubject(e), data)
	opts := []jetstream.PublishOpt{
		jetstream.WithMsgID(e.ID),
		jetstream.WithExpectStream(StreamName),
		jetstream.WithExpectLastSequenceForSubject(*e.Expect, filter),
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
		if err == nil && ack.Duplicate {
			// A duplicate ack carries the sequence of the first message
			// with this Nats-Msg-Id: an attempt of ours whose ack was lost,
			// or something stored under our id by someone who saw it.
			return s.ours(ctx, e, data, filter, ack.Sequence)
		}
		if err == nil {
			return ack.Sequence, nil
		}
		lastErr = err
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			switch apiErr.ErrorCode {
			case errWrongLastSequence, errWrongLastSequenceConstant:
				// An earlier attempt (this call's or a caller's retry) may
				// have landed with its ack lost: then the last message
				// there is ours.
				last, err := s.lastMsg(ctx, filter)
				switch {
				case err != nil:
					return 0, fmt.Errorf("eventstore: append %s %s: %w", e.Type(), e.ID, err)
				case last != nil && last.Header.Get(jetstream.MsgIDHeader) == e.ID && bytes.Equal(last.Data, data):
					return last.Sequence, nil
				}
				c := &domain.ConflictError{Err: fmt.Errorf("eventstore: append %s %s: %w", e.Type(), e.ID, apiErr)}
				if last != nil {
					c.Last = last.Sequence
				}
				return 0, c
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

// ours returns seq if the message stored there is e as this store encoded
// it (data), and otherwise a conflict, so that the caller decides again with
// a new event id: the message id was taken, and a check by id alone would
// report as stored an event that is not.
func (s *Store) ours(ctx context.Context, e domain.Event, data []byte, filter string, seq uint64) (uint64, error) {
	m, err := withRetry(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.stream.GetMsg(ctx, seq)
	})
	if err != nil {
		return 0, fmt.Errorf("eventstore: append %s %s: read back %d: %w (%v)", e.Type(), e.ID, seq, domain.ErrUnavailable, err)
	}
	if bytes.Equal(m.Data, data) {
		return seq, nil
	}
	c := &domain.ConflictError{Err: fmt.Errorf("eventstore: append %s %s: another message took its id, at %d", e.Type(), e.ID, seq)}
	if last, err := s.lastMsg(ctx, filter); err != nil {
		return 0, err
	} else if last != nil {
		c.Last = last.Sequence
	}
	return 0, c
}

// retryable reports whether a publish error leaves the outcome unknown or the
// stream momentarily unreachable, so that the same message may be sent again.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == errClusterNotAvailable)
}

// tagged returns a message for subject with data, tagged as the ledger's.
func (s *Store) tagged(subject string, data []byte) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if s.cfg.Tags != nil {
		msg.Header.Set(integrity.TagHeader, s.cfg.Tags.Tag(sha256.Sum256(data)))
	}
	return msg
}

// AppendCheckpoint stores a signed checkpoint. Checkpoints of one covered
// sequence written by several instances at once are stored once (the
// message id names the sequence); the sequence is 0 when another instance
// was storing that checkpoint at the same moment.
func (s *Store) AppendCheckpoint(ctx context.Context, c *integrity.Checkpoint) (uint64, error) {
	data, err := c.Encode()
	if err != nil {
		return 0, err
	}
	ack, err := withRetry(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
		return s.js.PublishMsg(ctx, s.tagged(integrity.CheckpointSubject, data),
			jetstream.WithMsgID(fmt.Sprintf("checkpoint-%d", c.Covers)), jetstream.WithExpectStream(StreamName))
	})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errDuplicateInProcess {
		// Another instance is storing the same checkpoint this moment.
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore: append checkpoint: %w", err)
	}
	return ack.Sequence, nil
}

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

// Created is when the stream this store opened was created: it names that
// stream, so that one created again in its place can be told apart.
func (s *Store) Created() time.Time { return s.created }

// Check implements follower.Stream: the stream must still be the one opened,
// hold every message up to applied, and have lost none.
//
// Only the stream leader's word counts. While a replicated stream has no
// leader (a failover), each of its replicas answers stream info from its own
// state, which may lag behind what was acknowledged and applied elsewhere;
// such an answer proves nothing either way, and Check says the stream is
// unavailable instead (measured: an instance stopped for good, as if history
// were lost, in 4 of 19 failover runs before this).
func (s *Store) Check(ctx context.Context, applied uint64) error {
	// A handle of its own: stream info refreshes a handle's cached
	// configuration, and the store's lookups must keep the one checked at
	// Open (no direct get) whatever an operator changes meanwhile.
	info, err := withRetry(ctx, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		stream, err := s.js.Stream(ctx, StreamName)
		if err != nil {
			return nil, err
		}
		return stream.CachedInfo(), nil
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("eventstore: %w: the stream %s was deleted", domain.ErrHistoryLost, StreamName)
	}
	if err != nil {
		return fmt.Errorf("eventstore: stream info: %w (%v)", domain.ErrUnavailable, err)
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("eventstore: stream info from a replica while the stream has no leader: %w", domain.ErrUnavailable)
	}
	st := info.State
	switch {
	case !info.Created.Equal(s.Created()):
		return fmt.Errorf("eventstore: %w: the stream %s was replaced (created %s; this instance opened the one created %s)", domain.ErrHistoryLost, StreamName, info.Created.UTC().Format(time.RFC3339Nano), s.Created().UTC().Format(time.RFC3339Nano))
	case st.LastSeq < applied:
		return fmt.Errorf("eventstore: %w: the stream ends at sequence %d, but this instance applied up to %d", domain.ErrHistoryLost, st.LastSeq, applied)
	case st.NumDeleted > 0 || (st.Msgs > 0 && st.FirstSeq > 1) || (st.Msgs == 0 && st.LastSeq > 0):
		return fmt.Errorf("eventstore: %w: messages were removed from the stream (first sequence %d, %d messages up to %d)", domain.ErrHistoryLost, st.FirstSeq, st.Msgs, st.LastSeq)
	}
	return nil
}

// LastSeq implements domain.EventStore: the stream's last sequence, from the
// last message as the stream leader answers it (STREAM.MSG.GET, which only a
// leader that has applied everything it knows answers). Stream info would
// not do: without a leader, any replica answers it from its own state. The
// filter ">" is what the server answers from its last sequence directly; the
// stream's own subject, ledger.>, would scan every subject.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	return s.lastSeqFor(ctx, ">")
}
