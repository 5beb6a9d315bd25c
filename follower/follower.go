// Package follower keeps an instance's projection in step with the stream: it
// restores the latest usable snapshot, replays the stream from there, follows
// it for as long as the instance runs (resuming after a lost consumer, with
// backoff), says when the instance is ready to answer, and writes snapshots
// now and then. The binary and the test builders run this same code.
package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/projections"
)

// Stream is the part of the event store a follower reads
// (eventstore.Store implements it).
type Stream interface {
	// LastSeq returns the stream's last sequence.
	LastSeq(ctx context.Context) (uint64, error)
	// Follow delivers every stored message after afterSeq in stream order,
	// as records, and new ones as they come, until ctx ends or apply fails.
	// An error matching domain.ErrUndecodable stops the projection for good;
	// others are retried.
	Follow(ctx context.Context, afterSeq uint64, apply func(domain.Record) error) error
	// Check returns an error matching domain.ErrHistoryLost when the stream
	// no longer holds what was applied up to applied: deleted, replaced or
	// truncated.
	Check(ctx context.Context, applied uint64) error
}

// Checkpoints configures the checkpoint writer.
type Checkpoints struct {
	// Interval is how often a checkpoint is written while there are new
	// messages since the last one (0: never).
	Interval time.Duration
	// Key returns the key that signs now (it rotates).
	Key    func() integrity.CheckpointKey
	Append func(ctx context.Context, c *integrity.Checkpoint) (uint64, error)
}

// Snapshots stores projection snapshots (eventstore.Snapshots implements it).
type Snapshots interface {
	Latest(ctx context.Context) ([]byte, error)
	LatestSeq(ctx context.Context) (uint64, error)
	Save(ctx context.Context, seq uint64, data []byte) error
}

// Config configures a Follower.
type Config struct {
	Stream Stream
	// Snapshots, when not nil, is where the projection is restored from
	// and, every SnapshotInterval (0: never), saved to once SnapshotMinEvents
	// events were applied since the stored snapshot.
	Snapshots         Snapshots
	SnapshotInterval  time.Duration
	SnapshotMinEvents uint64
	// Sealer seals the snapshots written and opens the ones restored
	// (required with Snapshots).
	Sealer      projections.Sealer
	Checkpoints Checkpoints
	// CheckInterval is how often the stream is checked for lost history
	// (default 2 s).
	CheckInterval time.Duration
	// CaughtUp, if set, runs once in its own goroutine when the projection
	// has applied every event that was in the stream at start, with a
	// context that ends on Close (the ledger records owed revocations and
	// starts sweeping expiries there).
	CaughtUp func(ctx context.Context)
	Logger   *slog.Logger
}

// Follower runs a projection that follows the stream. New restores it, Start
// starts following, Close stops.
type Follower struct {
	cfg  Config
	log  *slog.Logger
	proj *projections.Sessions

	replayTo uint64 // stream sequence the projection must reach to be ready
	ready    chan struct{}
	once     sync.Once // closes ready
	caught   sync.Once // runs CaughtUp

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New notes the stream's last sequence and restores the projection from the
// stored snapshot when there is a usable one. The projection is not ready
// until Start has caught it up with that sequence.
func New(ctx context.Context, cfg Config) (*Follower, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Snapshots != nil && cfg.Sealer == nil {
		return nil, errors.New("follower: snapshots need a sealer")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 2 * time.Second
	}
	f := &Follower{cfg: cfg, log: log, ready: make(chan struct{})}
	// The snapshot first, the stream's last sequence after: a snapshot saved
	// by another instance in between then still covers no more than the
	// stream holds, and is used rather than discarded.
	data := f.loadSnapshot(ctx)
	var err error
	if f.replayTo, err = cfg.Stream.LastSeq(ctx); err != nil {
		return nil, err
	}
	// A stream that lost messages is refused before anything is decided
	// on what is left (a deactivation among the lost would let the user in).
	if err := cfg.Stream.Check(ctx, 0); errors.Is(err, domain.ErrHistoryLost) {
		return nil, fmt.Errorf("follower: %w", err)
	}
	if f.proj, err = f.restore(data); err != nil {
		return nil, err
	}
	return f, nil
}

// Start follows the stream from where the projection is, until Close.
func (f *Follower) Start() {
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Add(1)
	go f.follow(runCtx)
	if f.cfg.Snapshots != nil && f.cfg.SnapshotInterval > 0 {
		f.every(runCtx, f.cfg.SnapshotInterval, f.writeSnapshot)
	}
	if f.cfg.Checkpoints.Interval > 0 {
		f.every(runCtx, f.cfg.Checkpoints.Interval, f.writeCheckpoint)
	}
	f.every(runCtx, f.cfg.CheckInterval, f.checkHistory)
}

// every runs fn every interval, in a goroutine Close waits for, until ctx
// ends or fn says to stop.
func (f *Follower) every(ctx context.Context, interval time.Duration, fn func(context.Context) (stop bool)) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if fn(ctx) {
				return
			}
		}
	}()
}

// Projection is the projection the follower keeps.
func (f *Follower) Projection() *projections.Sessions { return f.proj }

// ReplayTo is the stream sequence the projection had to reach at start.
func (f *Follower) ReplayTo() uint64 { return f.replayTo }

// Ready is nil once the projection has applied every event that was in the
// stream at start, and for as long as it keeps following. Once the projection
// has stopped for good (an undecodable event) it matches
// domain.ErrProjectionFailed: the instance will not answer again until the
// stream is repaired and it is restarted.
func (f *Follower) Ready() error {
	if err := f.proj.Err(); err != nil {
		return fmt.Errorf("%w: %w", domain.ErrProjectionFailed, err)
	}
	select {
	case <-f.ready:
		return nil
	default:
		return fmt.Errorf("replaying: applied %d of %d events", f.proj.Applied(), f.replayTo)
	}
}

// WaitReady blocks until Ready is nil, the projection stops, or ctx ends.
func (f *Follower) WaitReady(ctx context.Context) error {
	select {
	case <-f.ready:
	case <-ctx.Done():
	}
	return f.Ready()
}

// Close stops following and waits for everything the follower started,
// CaughtUp included.
func (f *Follower) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

// follow applies the stream to the projection until ctx ends. It resumes
// after the last applied event whenever the consumer is lost (a failover, a
// reconnect); only an undecodable event stops it, and the projection with it.
func (f *Follower) follow(ctx context.Context) {
	defer f.wg.Done()
	apply := func(r domain.Record) error {
		if err := f.proj.ApplyRecord(r); err != nil {
			return err
		}
		if r.Seq == f.replayTo {
			f.caughtUp(ctx)
		}
		return nil
	}
	if f.proj.Applied() >= f.replayTo {
		f.caughtUp(ctx)
	}
	const minBackoff = 100 * time.Millisecond
	for backoff := minBackoff; ; {
		from := f.proj.Applied()
		err := f.cfg.Stream.Follow(ctx, from, apply)
		if ctx.Err() != nil {
			return
		}
		if f.proj.Err() != nil {
			return
		}
		if errors.Is(err, domain.ErrUndecodable) {
			f.stop("projection stopped: an event the ledger wrote that this version cannot decode; upgrade this instance", err)
			return
		}
		if lost := f.cfg.Stream.Check(ctx, f.proj.Applied()); errors.Is(lost, domain.ErrHistoryLost) {
			f.stop("projection stopped: the stream lost history this instance applied", lost)
			return
		}
		if f.proj.Applied() > from {
			backoff = minBackoff // it made progress: this is a new loss, not the same one
		}
		f.log.Warn("projection: following the stream again", "after_seq", f.proj.Applied(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// stop stops the projection for good: the instance answers 503 until an
// operator acts.
func (f *Follower) stop(msg string, err error) {
	f.log.Error(msg, "applied_seq", f.proj.Applied(), "err", err)
	f.proj.Fail(err)
	close(f.readyOnce())
}

// checkHistory checks that the stream still holds the history applied: a
// stream deleted, replaced or truncated while the instance runs stops it (the
// consumer may keep quiet about it).
func (f *Follower) checkHistory(ctx context.Context) (stop bool) {
	if f.proj.Err() != nil {
		return true
	}
	if err := f.cfg.Stream.Check(ctx, f.proj.Applied()); errors.Is(err, domain.ErrHistoryLost) {
		f.stop("projection stopped: the stream lost history this instance applied", err)
		return true
	}
	return false
}

// writeCheckpoint appends a signed checkpoint when the stream has messages
// the last checkpoint does not cover.
func (f *Follower) writeCheckpoint(ctx context.Context) (stop bool) {
	if f.Ready() != nil {
		return false
	}
	c, pending := f.proj.NextCheckpoint()
	if !pending {
		return false
	}
	c.Time = time.Now().UTC()
	f.cfg.Checkpoints.Key().Sign(&c)
	if _, err := f.cfg.Checkpoints.Append(ctx, &c); err != nil && ctx.Err() == nil {
		f.log.Warn("checkpoint not written", "covers_seq", c.Covers, "err", err)
	}
	return false
}

// readyOnce returns the ready channel the first time and a fresh one after,
// so that it is closed exactly once whichever of caught-up or stopped comes
// first.
func (f *Follower) readyOnce() chan struct{} {
	ch := make(chan struct{})
	f.once.Do(func() { ch = f.ready })
	return ch
}

// caughtUp marks the follower ready and runs CaughtUp, once however often
// the event at replayTo is delivered.
func (f *Follower) caughtUp(ctx context.Context) {
	f.caught.Do(func() {
		close(f.readyOnce())
		f.log.Info("projection caught up", "seq", f.proj.Applied(), "live_sessions", f.proj.LiveSessions())
		if f.cfg.CaughtUp != nil {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.cfg.CaughtUp(ctx)
			}()
		}
	})
}

// loadSnapshot returns the stored snapshot, nil if there is none or no
// snapshot store.
func (f *Follower) loadSnapshot(ctx context.Context) []byte {
	if f.cfg.Snapshots == nil {
		return nil
	}
	data, err := f.cfg.Snapshots.Latest(ctx)
	if err != nil {
		f.log.Warn("snapshot ignored; replaying the stream from the start", "err", err)
		return nil
	}
	return data
}

// restore returns the projection from snapshot data when it is usable, or an
// empty projection to replay the stream into. A genuine snapshot that covers
// more than the stream holds means the stream lost history: an error.
func (f *Follower) restore(data []byte) (*projections.Sessions, error) {
	log := f.log
	if data == nil {
		return projections.NewSessions(log), nil
	}
	start := time.Now()
	p, err := projections.RestoreSessions(data, f.cfg.Sealer, log)
	switch {
	case err != nil:
		log.Warn("snapshot ignored; replaying the stream from the start", "err", err)
		return projections.NewSessions(log), nil
	case p.Applied() > f.replayTo:
		return nil, fmt.Errorf("follower: %w: the ledger's own snapshot covers the stream up to sequence %d, but the stream ends at %d (deleted and created again, or replaced); restore the stream, or remove the snapshot bucket and the data dir's stream record to start a new ledger on purpose", domain.ErrHistoryLost, p.Applied(), f.replayTo)
	}
	log.Info("projection restored from snapshot", "seq", p.Applied(), "live_sessions", p.LiveSessions(), "bytes", len(data), "duration_ms", time.Since(start).Milliseconds())
	return p, nil
}

// writeSnapshot writes a snapshot when enough events were applied since the
// stored one (whichever instance stored it).
func (f *Follower) writeSnapshot(ctx context.Context) (stop bool) {
	if f.Ready() != nil {
		return false
	}
	stored, err := f.cfg.Snapshots.LatestSeq(ctx)
	if err != nil || f.proj.Applied() < stored+f.cfg.SnapshotMinEvents {
		return false
	}
	start := time.Now()
	data, seq := f.proj.Snapshot(f.cfg.Sealer)
	encoded := time.Since(start)
	if err := f.cfg.Snapshots.Save(ctx, seq, data); err != nil {
		f.log.Warn("snapshot not saved", "err", err)
		return false
	}
	f.log.Info("snapshot saved", "seq", seq, "bytes", len(data), "encode_ms", encoded.Milliseconds(), "duration_ms", time.Since(start).Milliseconds())
	return false
}
