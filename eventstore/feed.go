package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// Feed follows the ledger's revocation events, for verifiers and operators.
// It needs only read access to the stream.
type Feed struct {
	nc     *nats.Conn
	stream jetstream.Stream
}

// NewFeed opens the ledger's stream on nc for reading: through the read-only
// imports of the ledger's NATS accounts (ReaderAPIPrefix) when nc is a
// reader there, else directly (a NATS without those accounts, or the
// ledger's own identity).
func NewFeed(ctx context.Context, nc *nats.Conn) (*Feed, error) {
	stream, err := openStream(ctx, nc, ReaderAPIPrefix)
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoResponders) {
		stream, err = openStream(ctx, nc, "")
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", StreamName, err)
	}
	return &Feed{nc: nc, stream: stream}, nil
}

// openStream looks the stream up under the JetStream API prefix (the default
// one when empty).
func openStream(ctx context.Context, nc *nats.Conn, prefix string) (jetstream.Stream, error) {
	js, err := jetstream.New(nc)
	if prefix != "" {
		js, err = jetstream.NewWithAPIPrefix(nc, prefix)
	}
	if err != nil {
		return nil, err
	}
	return js.Stream(ctx, StreamName)
}

// Connected reports whether the NATS connection is up.
func (f *Feed) Connected() bool { return f.nc.IsConnected() }

// Follow delivers the revocation events recorded since since (all of them
// when since is zero), in stream order, then every new one as it is recorded,
// until ctx ends. A message it cannot decode (not an event, or from a newer
// ledger) is skipped and reported to skip, if not nil: a reader without the
// ledger's keys cannot tell junk from a newer event, and stopping would leave
// every later revocation unheard. caughtUp, if not nil, is called once, when
// the events that were in the stream at the start have all been delivered.
func (f *Feed) Follow(ctx context.Context, since time.Time, fn func(domain.Event), skip func(seq uint64, err error), caughtUp func()) error {
	signalled := caughtUp == nil
	signal := func() {
		if !signalled {
			signalled = true
			caughtUp()
		}
	}
	started := func(pending uint64) bool {
		if pending == 0 {
			signal()
		}
		return false
	}
	// A lost consumer (a failover, a reconnect) is replaced after the last
	// message delivered; only ctx ends the loop.
	var last uint64
	for backoff := minResumePause; ; {
		from := last
		// Its error only says that the consumer was lost: resume.
		_ = consumeMsgs(ctx, f.stream, RevocationSubjects, position{afterSeq: last, since: since}, started, func(msg jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
			last = md.Sequence.Stream
			if e, err := decode(msg, md); err != nil {
				if skip != nil {
					skip(last, err)
				}
			} else {
				fn(e)
			}
			if md.NumPending == 0 {
				signal()
			}
			return true, nil
		})
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case last > from:
			backoff = minResumePause
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxResumePause)
	}
}

// The pause before a follower resumes after losing its consumer: short after
// progress, doubling while the stream stays unreachable.
const (
	minResumePause = 100 * time.Millisecond
	maxResumePause = 2 * time.Second
)

// Replay delivers the stored messages matching filters (every message when
// none) from start (zero: the beginning), in stream order, with their stream
// sequence, subject and stored bytes, and returns once it has delivered the
// last of the messages that matched when it began. total, if not nil, first
// learns how many those are.
func (f *Feed) Replay(ctx context.Context, filters []string, start time.Time, total func(uint64), fn func(seq uint64, subject string, data []byte) error) error {
	started := func(pending uint64) bool {
		if total != nil {
			total(pending)
		}
		return pending == 0
	}
	err := consumeMsgs(ctx, f.stream, filters, position{since: start}, started, func(msg jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		if err := fn(md.Sequence.Stream, msg.Subject(), msg.Data()); err != nil {
			return false, err
		}
		return md.NumPending > 0, nil
	})
	if err != nil {
		return fmt.Errorf("eventstore: replay: %w", err)
	}
	return nil
}

// LastCheckpoint returns the newest checkpoint in the stream and the
// sequence it is stored at.
func (f *Feed) LastCheckpoint(ctx context.Context) (uint64, []byte, error) {
	m, err := withRetry(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return f.stream.GetLastMsgForSubject(ctx, integrity.CheckpointSubject)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil, errors.New("eventstore: the stream holds no checkpoint yet")
	}
	if err != nil {
		return 0, nil, fmt.Errorf("eventstore: last checkpoint: %w", err)
	}
	return m.Sequence, m.Data, nil
}
