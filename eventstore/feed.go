package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
)

// RevocationSubjects are the subjects of every event after which a session's
// access tokens must be refused: a session revoked, expired or revoked by
// reuse, and a user's sessions revoked or the user deactivated.
var RevocationSubjects = []string{
	SubjectPrefix + ".*.*.revoked",
	SubjectPrefix + ".*.*.expired",
	SubjectPrefix + ".*.*.reused",
	SubjectPrefix + ".*.user.sessions_revoked",
	SubjectPrefix + ".*.user.deactivated",
}

// Feed follows the ledger's revocation events, for verifiers and operators.
// It needs only read access to the stream.
type Feed struct {
	nc     *nats.Conn
	stream jetstream.Stream
}

// NewFeed opens the ledger's stream on nc for reading.
func NewFeed(ctx context.Context, nc *nats.Conn) (*Feed, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventstore: %w", err)
	}
	stream, err := js.Stream(ctx, StreamName)
	if err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", StreamName, err)
	}
	return &Feed{nc: nc, stream: stream}, nil
}

// Connected reports whether the NATS connection is up.
func (f *Feed) Connected() bool { return f.nc.IsConnected() }

// Follow delivers the revocation events recorded since since (all of them
// when since is zero), in stream order, then every new one as it is recorded,
// until ctx ends. caughtUp, if not nil, is called once, when the events that
// were in the stream at the start have all been delivered.
func (f *Feed) Follow(ctx context.Context, since time.Time, fn func(domain.Event), caughtUp func()) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: RevocationSubjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	signalled := caughtUp == nil
	signal := func() {
		if !signalled {
			signalled = true
			caughtUp()
		}
	}
	started := func(pending uint64) {
		if pending == 0 {
			signal()
		}
	}
	err := consumeMsgs(ctx, f.stream, cfg, started, func(msg jetstream.Msg) (bool, error) {
		e, err := decode(msg)
		if err != nil {
			return false, err
		}
		fn(e)
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			signal()
		}
		return true, nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("eventstore: follow revocations: %w", err)
	}
	return err
}
