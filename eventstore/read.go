package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
)

// ErrUndecodable marks a stream message that is not a known event
// (domain.ErrUndecodable).
var ErrUndecodable = domain.ErrUndecodable

// SessionEvents implements domain.EventStore.
func (s *Store) SessionEvents(ctx context.Context, sessionID string) ([]domain.Event, error) {
	if !domain.ValidSessionID(sessionID) {
		return nil, nil
	}
	return s.events(ctx, SessionFilter(sessionID), 1)
}

// UserEvents implements domain.EventStore.
func (s *Store) UserEvents(ctx context.Context, userKey string, afterSeq uint64) ([]domain.Event, error) {
	return s.events(ctx, UserEventsFilter(userKey), afterSeq+1)
}

// events returns the events matching filter from startSeq on, up to the last
// one stored when it began.
func (s *Store) events(ctx context.Context, filter string, startSeq uint64) ([]domain.Event, error) {
	last, err := s.lastSeqFor(ctx, filter)
	if err != nil || last < startSeq {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var events []domain.Event
	err = consume(ctx, s.stream, []string{filter}, position{afterSeq: startSeq - 1}, func(e domain.Event) (bool, error) {
		events = append(events, e)
		return e.Seq < last, nil
	})
	switch {
	case err == nil:
		return events, nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("eventstore: read %s: %w (%v)", filter, domain.ErrUnavailable, err)
	}
	return nil, fmt.Errorf("eventstore: read %s: %w", filter, err)
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

// consume reads the events matching filters from p in stream order until fn
// returns false or an error, or ctx ends. A message that does not decode is
// an error: nothing is skipped silently.
func consume(ctx context.Context, stream jetstream.Stream, filters []string, p position, fn func(domain.Event) (more bool, err error)) error {
	return consumeMsgs(ctx, stream, filters, p, nil, func(msg jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		e, err := decode(msg, md)
		if err != nil {
			return false, err
		}
		return fn(e)
	})
}

// consumeMsgs is consume for callers that need the message metadata too.
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

// Follow delivers every event after afterSeq to apply, in stream order, and
// keeps following new ones until ctx ends or apply fails. A message that does
// not decode stops it with an error: nothing is skipped silently.
func (s *Store) Follow(ctx context.Context, afterSeq uint64, apply func(domain.Event) error) error {
	err := consume(ctx, s.stream, nil, position{afterSeq: afterSeq}, func(e domain.Event) (bool, error) { return true, apply(e) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("eventstore: follow: %w", err)
	}
	return err
}
