package eventstore

import (
	"context"
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
	var events []domain.Event
	err = s.read(ctx, filter, startSeq, last, func(e domain.Event) bool {
		events = append(events, e)
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
