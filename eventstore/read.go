package eventstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// ErrUndecodable marks a stream message that is not a known event
// (domain.ErrUndecodable).
var ErrUndecodable = domain.ErrUndecodable

// SessionEvents implements domain.EventStore.
func (s *Store) SessionEvents(ctx context.Context, userKey, sessionID string) ([]domain.Event, error) {
	if !domain.ValidSessionID(sessionID) {
		return nil, nil
	}
	filter := SessionFilter(sessionID)
	if userKey != "" {
		filter = UserSessionFilter(userKey, sessionID)
	}
	return s.events(ctx, filter, 1)
}

// UserEvents implements domain.EventStore.
func (s *Store) UserEvents(ctx context.Context, userKey string, afterSeq uint64) ([]domain.Event, error) {
	return s.events(ctx, UserEventsFilter(userKey), afterSeq+1)
}

// events returns the ledger's events matching filter from startSeq on, up to
// the last message stored when it began (as the stream leader tells), within
// ctx's deadline. Messages the ledger did not write
// are left out, and so is a copy of an event already read (same id: a
// genuine event replayed, which the projection refuses too).
func (s *Store) events(ctx context.Context, filter string, startSeq uint64) ([]domain.Event, error) {
	last, err := s.lastSeqFor(ctx, filter)
	if err != nil || last < startSeq {
		return nil, err
	}
	var events []domain.Event
	seen := map[string]bool{} // a genuine event stored again later is a replay, not history
	rd := s.reader()
	err = consumeMsgs(ctx, s.stream, []string{filter}, position{afterSeq: startSeq - 1}, nil, func(msg jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		r, err := rd.record(msg, md)
		if err != nil {
			return false, err
		}
		if r.Kind == domain.RecordEvent && !seen[r.Event.ID] {
			seen[r.Event.ID] = true
			events = append(events, r.Event)
		}
		return md.Sequence.Stream < last, nil
	})
	switch {
	case err == nil:
		return events, nil
	case errors.Is(err, ErrUndecodable):
		return nil, fmt.Errorf("eventstore: read %s: %w", filter, err)
	}
	// A lost consumer, a missed heartbeat, a gap, an election: the stream
	// is unavailable for now, and the caller may retry.
	return nil, fmt.Errorf("eventstore: read %s: %w (%v)", filter, domain.ErrUnavailable, err)
}

// position is where a read starts: after a stream sequence, at a time, or
// (both zero) at the beginning.
type position struct {
	afterSeq uint64
	since    time.Time
}

// consumer is the configuration of a read's consumer: matching filters (every
// message when none), from p, delivered without acks.
func (p position) consumer(filters []string) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 10 * time.Second, // cleaned up by the server if the delete is lost
	}
	switch {
	case p.afterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, p.afterSeq+1
	case !p.since.IsZero():
		since := p.since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	return cfg
}

// consumeMsgs reads the messages matching filters (every message when none)
// from p in stream order until fn returns false or an error, or ctx ends.
// started, if not nil, learns how many messages matched when the consumer was
// created, and ends the loop at once by returning true.
//
// It reads through an ephemeral pull consumer of its own, not nats.go's
// ordered consumer: that one recreates itself on a lost heartbeat inside the
// library, with ten-second requests and backoff, and a stream-leader failover
// could stall a projection for eleven seconds that way, longer than the reuse
// grace window. Here every request has requestTimeout and is retried
// (withRetry), a missed heartbeat (two heartbeats, a second) or a gap in the
// consumer's sequence ends the read with an error, and the caller resumes
// after the last message it got.
func consumeMsgs(ctx context.Context, stream jetstream.Stream, filters []string, p position, started func(pending uint64) (stop bool), fn func(jetstream.Msg, *jetstream.MsgMetadata) (more bool, err error)) error {
	cfg := p.consumer(filters)
	cons, err := withRetry(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return stream.CreateConsumer(ctx, cfg)
	})
	if err != nil {
		return err
	}
	defer func() {
		// In the background: after a failover the request may wait out its
		// timeout, and the caller should resume at once.
		go func(name string) {
			dctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			_ = stream.DeleteConsumer(dctx, name)
		}(cons.CachedInfo().Name)
	}()
	// Short pulls and heartbeats: a consumer lost with its server (failover)
	// is noticed within about a second, not after the defaults' ten, which
	// matters because clients retry within the reuse grace window.
	it, err := cons.Messages(jetstream.PullMaxMessages(1024), jetstream.PullExpiry(2*time.Second),
		jetstream.PullHeartbeat(500*time.Millisecond), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	if info := cons.CachedInfo(); started != nil && info != nil && started(info.NumPending) {
		return nil
	}
	for delivered := uint64(0); ; {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		if md.Sequence.Consumer != delivered+1 {
			return fmt.Errorf("consumer delivered its message %d after %d: %w", md.Sequence.Consumer, delivered, errGap)
		}
		delivered++
		if more, err := fn(msg, md); err != nil || !more {
			return err
		}
	}
}

// errGap: the consumer skipped or repeated a message; reading must resume
// from the last message delivered.
var errGap = errors.New("gap in the consumer's deliveries")

// decode turns a stream message into an event with its sequence.
func decode(msg jetstream.Msg, md *jetstream.MsgMetadata) (domain.Event, error) {
	e, err := domain.DecodeEventWith(msg.Data(), gojson.Unmarshal)
	if err != nil {
		return domain.Event{}, fmt.Errorf("eventstore: sequence %d: %w: %w", md.Sequence.Stream, ErrUndecodable, err)
	}
	e.Seq = md.Sequence.Stream
	return e, nil
}

// reader turns stream messages into records, checking tags; one per read
// (it is not safe for concurrent use).
type reader struct {
	cfg     Config
	checker *integrity.Checker
}

func (s *Store) reader() *reader {
	r := &reader{cfg: s.cfg}
	if s.cfg.Tags != nil {
		r.checker = s.cfg.Tags.Checker()
	}
	return r
}

// record reads one stored message. A message is the ledger's when its tag
// is valid (or it is old enough to be trusted untagged), it decodes, and its
// subject is the one its content belongs under; anything else is a
// RecordRejected, never an error, so that nobody can stop a projection with
// junk. Only a message with a valid tag that this version cannot decode (a
// newer version wrote it) is an error matching ErrUndecodable.
func (rd *reader) record(msg jetstream.Msg, md *jetstream.MsgMetadata) (domain.Record, error) {
	seq, subject, data := md.Sequence.Stream, msg.Subject(), msg.Data()
	r := domain.Record{Seq: seq}
	r.UserKey, r.Under = placeOf(subject)
	reject := func(format string, args ...any) (domain.Record, error) {
		r.Kind, r.Err = domain.RecordRejected, fmt.Errorf(format, args...)
		return r, nil
	}
	tag := ""
	if rd.checker != nil {
		if tag = msg.Headers().Get(integrity.TagHeader); tag == "" && seq > rd.cfg.TrustUntaggedThrough {
			r.Digest = sha256.Sum256(data)
			return reject("not written by the ledger: %w", integrity.ErrNoTag)
		}
	}
	checkTag := func(digest [32]byte) error {
		if rd.checker == nil || tag == "" {
			return nil
		}
		return rd.checker.Check(tag, digest)
	}
	if subject == integrity.CheckpointSubject {
		r.Digest = sha256.Sum256(data)
		if err := checkTag(r.Digest); err != nil {
			return reject("checkpoint not written by the ledger: %w", err)
		}
		c, err := integrity.DecodeCheckpoint(data)
		if err != nil {
			return r, fmt.Errorf("eventstore: sequence %d: %w: %w", seq, ErrUndecodable, err)
		}
		r.Kind, r.Covers = domain.RecordCheckpoint, c.Covers
		return r, nil
	}
	e, err := domain.DecodeEventWith(data, gojson.Unmarshal)
	if err != nil {
		r.Digest = sha256.Sum256(data)
		if rd.checker == nil || checkTag(r.Digest) == nil {
			return r, fmt.Errorf("eventstore: sequence %d: %w (written by the ledger, but not by this version of it: upgrade): %w", seq, ErrUndecodable, err)
		}
		return reject("not written by the ledger: %w", integrity.ErrBadTag)
	}
	r.Digest = e.Digest
	if err := checkTag(e.Digest); err != nil {
		return reject("not written by the ledger: %w", err)
	}
	if want := SessionSubject(e); subject != want {
		return reject("event %s stored under %q, but it belongs under %q", e.ID, subject, want)
	}
	if err := checkExpectation(msg.Headers(), e); err != nil {
		return reject("event %s: %w", e.ID, err)
	}
	if err := checkStoredInTime(e, md.Timestamp); err != nil {
		return reject("event %s: %w", e.ID, err)
	}
	e.Seq = seq
	r.Kind, r.Event, r.UserKey, r.Under = domain.RecordEvent, e, e.UserKey, domain.EventRecord(e).Under
	return r, nil
}

// placeOf returns the user key a subject names (ledger.<key>.…), and, for a
// subject of the ledger's layout (ledger.<key>.<session id or user>.<name>),
// what it names after it: "" where there is none.
func placeOf(subject string) (userKey, under string) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix+".")
	if !ok {
		return "", ""
	}
	key, tail, ok := strings.Cut(rest, ".")
	if !ok || !strings.Contains(tail, ".") || key == "" {
		return "", ""
	}
	under, name, _ := strings.Cut(tail, ".")
	if under == "" || name == "" || strings.Contains(name, ".") {
		return key, ""
	}
	return key, under
}

// Follow delivers every stored message after afterSeq to apply as a record,
// in stream order, and keeps following new ones until ctx ends or apply
// fails. Messages the ledger did not write come as RecordRejected; only one
// that it wrote but this version cannot decode stops it (ErrUndecodable).
func (s *Store) Follow(ctx context.Context, afterSeq uint64, apply func(domain.Record) error) error {
	rd := s.reader()
	err := consumeMsgs(ctx, s.stream, nil, position{afterSeq: afterSeq}, nil, func(msg jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		r, err := rd.record(msg, md)
		if err != nil {
			return false, err
		}
		return true, apply(r)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("eventstore: follow: %w", err)
	}
	return err
}

// checkExpectation checks that the stream enforced the event's expectation
// (domain.Event.Expect) when it stored it: the headers it was published with
// must ask for exactly that. Without this, a copy of a genuine event
// published again without the headers would be stored; with it, the copy's
// expectation no longer holds and the stream refuses it. An event written
// before expectations (Expect nil) chains by its prevdigest instead.
func checkExpectation(h nats.Header, e domain.Event) error {
	if e.Expect == nil {
		return nil
	}
	if h.Get(jetstream.ExpectedLastSubjSeqHeader) != strconv.FormatUint(*e.Expect, 10) || h.Get(jetstream.ExpectedLastSubjSeqSubjHeader) != ExpectFilter(e) {
		return fmt.Errorf("stored without the expectation it was written for (%d under %s): %w", *e.Expect, ExpectFilter(e), errReplayed)
	}
	return nil
}

// MaxStoreDelay is how long after the ledger made an event's id (a ULID, by
// the writing instance's clock) the stream may store it (by the server's
// clock): the ledger's own attempts end with the request's budget (at most
// a minute), and the rest is room for the two clocks to differ. It is the
// window in which JetStream deduplicates a retried publish, too.
const MaxStoreDelay = DuplicateWindow

// checkStoredInTime refuses an event written under an expectation that the
// stream stored longer than MaxStoreDelay after the ledger made it: a write
// the ledger gave up on (its publish was seen, the stream did not store it,
// the client was told it failed), stored later by someone who captured it
// while its expectation still held. Within the window it is no different
// from the ledger's own attempt whose acknowledgement was lost. The times
// are the event's id (covered by the tag) and the server's store time, the
// same for every reader. An id that is not a ULID is not the ledger's; such
// events come only from tests of the store, and are left to the tag.
func checkStoredInTime(e domain.Event, stored time.Time) error {
	if e.Expect == nil || stored.IsZero() {
		return nil
	}
	id, err := ulid.ParseStrict(e.ID)
	if err != nil {
		return nil
	}
	if delay := stored.Sub(ulid.Time(id.Time())); delay > MaxStoreDelay {
		return fmt.Errorf("stored %v after it was made, more than %v: a write the ledger gave up on, stored by someone else: %w", delay.Round(time.Second), MaxStoreDelay, errReplayed)
	}
	return nil
}

// errReplayed: an event stored in a place it was not written for.
var errReplayed = errors.New("not stored where the ledger wrote it (a replay)")
