package follower_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/follower"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/projections"
)

// wait bounds every wait in these tests: generous for -race on a loaded
// machine, and only ever spent when a test fails.
const wait = 10 * time.Second

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ledger is a real in-process JetStream with the ledger's stream, and the
// bookkeeping a test needs to append valid events to it.
type ledger struct {
	srv  *natstest.Server
	st   *eventstore.Store
	js   jetstream.JetStream
	mu   sync.Mutex
	last map[string]uint64 // "<user key>.<session id or user>" → the last event there
	ids  int
}

func newLedger(t *testing.T) *ledger {
	t.Helper()
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st, err := eventstore.Open(context.Background(), nc, eventstore.Config{Tags: ledgertest.TagKeys})
	if err != nil {
		t.Fatalf("eventstore.Open: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}
	return &ledger{srv: srv, st: st, js: js, last: map[string]uint64{}}
}

func (l *ledger) snapshots(t *testing.T) *eventstore.Snapshots {
	t.Helper()
	snaps, err := l.st.Snapshots(context.Background(), eventstore.Config{})
	if err != nil {
		t.Fatalf("Snapshots: %v", err)
	}
	return snaps
}

// append stores one event of user (in session, "" for a user event) with the
// right expected user sequence and returns its stream sequence.
func (l *ledger) append(t *testing.T, user, session string, p domain.Payload) uint64 {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids++
	e := domain.Event{ID: fmt.Sprintf("EV%06d", l.ids), Time: t0, SessionID: session, UserKey: user, Data: p}
	// What the ledger expects: the last event of the session, or the
	// user's last user event.
	under := user + "." + session
	if session == "" {
		under = user + ".user"
	}
	last := l.last[under]
	e.Expect = &last
	seq, err := l.st.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("append %s: %v", p.EventType(), err)
	}
	l.last[under] = seq
	return seq
}

// issue opens a session for user and returns its id and sequence.
func (l *ledger) issue(t *testing.T, user string) (id string, seq uint64) {
	t.Helper()
	l.mu.Lock()
	id = fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7K8M9%04d", l.ids+1)
	l.mu.Unlock()
	return id, l.append(t, user, id, issuedPayload(id))
}

func issuedPayload(id string) domain.SessionIssued {
	return domain.SessionIssued{
		UserID:       "user-of-" + id,
		Policy:       domain.Policy{Name: "consumer", AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600},
		Device:       domain.Device{IP: "192.0.2.1", UserAgent: "test"},
		RefreshToken: domain.Digest{KeyID: "k1", Value: sha256.Sum256([]byte(id))},
	}
}

// issueN opens n sessions spread over three users and returns the last sequence.
func (l *ledger) issueN(t *testing.T, n int) uint64 {
	t.Helper()
	var seq uint64
	for i := range n {
		_, seq = l.issue(t, fmt.Sprintf("uk%d", i%3))
	}
	return seq
}

// publishFromNewerVersion stores a message tagged with the ledger's key that
// this version cannot decode (an event type it does not know), as a newer
// version of the ledger would write, and returns its sequence.
func (l *ledger) publishFromNewerVersion(t *testing.T) uint64 {
	t.Helper()
	data := []byte(`{"specversion":"1.0","id":"X","type":"session.teleported","source":"urn:sessionledger","subject":"s","time":"2026-01-01T00:00:00Z","userkey":"x","data":{}}`)
	return l.publish(t, "ledger.x.y.teleported", data, ledgertest.TagKeys.Tag(sha256.Sum256(data)))
}

// publish stores data under subject with tag ("": none) as anyone with
// write access to the stream could, and returns its sequence.
func (l *ledger) publish(t *testing.T, subject string, data []byte, tag string) uint64 {
	t.Helper()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if tag != "" {
		msg.Header.Set(integrity.TagHeader, tag)
	}
	ack, err := l.js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ack.Sequence
}

func (l *ledger) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := l.st.LastSeq(context.Background())
	if err != nil {
		t.Fatalf("LastSeq: %v", err)
	}
	return seq
}

// newFollower builds a follower; it is closed when the test ends (Close is
// safe to call again), and a Close that hangs fails the test instead of
// hanging it.
func newFollower(t *testing.T, cfg follower.Config) *follower.Follower {
	t.Helper()
	if cfg.Snapshots != nil && cfg.Sealer == nil {
		cfg.Sealer = ledgertest.TagKeys
	}
	f, err := follower.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("follower.New: %v", err)
	}
	t.Cleanup(func() { closeWithin(t, f) })
	return f
}

// waitReady calls WaitReady with a context that ends after wait, and reports
// whether WaitReady returned before that context ended (a WaitReady that only
// returns at its deadline has not seen the follower become ready or stop).
func waitReady(t *testing.T, f *follower.Follower) (err error, returnedEarly bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err = f.WaitReady(ctx)
	return err, ctx.Err() == nil
}

// waitApplied waits until the projection has applied seq.
func waitApplied(t *testing.T, f *follower.Follower, seq uint64) {
	t.Helper()
	poll.Until(t, wait, func() error {
		if got := f.Projection().Applied(); got != seq {
			return fmt.Errorf("Applied() = %d, want %d", got, seq)
		}
		return nil
	})
}

// closeWithin calls Close and fails the test if it does not return within wait.
func closeWithin(t *testing.T, f *follower.Follower) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Close()
	}()
	poll.Until(t, wait, func() error {
		select {
		case <-done:
			return nil
		default:
			return errors.New("Close has not returned")
		}
	})
}

// live returns the projection's live sessions ordered by id.
func live(p *projections.Sessions) []domain.Session {
	out := p.Live()
	slices.SortFunc(out, func(a, b domain.Session) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func TestReadiness(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events int // events in the stream before New
	}{
		{"empty stream", 0},
		{"one event", 1},
		{"many events", 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			want := l.issueN(t, tc.events)
			var caughtUp atomic.Int32
			var appliedAtCaughtUp atomic.Uint64
			var f *follower.Follower
			f = newFollower(t, follower.Config{Stream: l.st, CaughtUp: func(context.Context) {
				appliedAtCaughtUp.Store(f.Projection().Applied())
				caughtUp.Add(1)
			}})

			if got := f.ReplayTo(); got != want {
				t.Errorf("ReplayTo() = %d, want %d", got, want)
			}
			err := f.Ready()
			if err == nil || !strings.Contains(err.Error(), "replaying") {
				t.Fatalf("Ready() before Start = %v, want an error saying it is replaying", err)
			}
			if errors.Is(err, domain.ErrProjectionFailed) {
				t.Fatalf("Ready() before Start = %v, which matches ErrProjectionFailed; want only 'replaying'", err)
			}

			f.Start()
			err, early := waitReady(t, f)
			if err != nil || !early {
				t.Fatalf("WaitReady after Start = %v (returned before its deadline: %v), want nil at once", err, early)
			}
			if err := f.Ready(); err != nil {
				t.Fatalf("Ready() after WaitReady = %v, want nil", err)
			}
			if got := f.Projection().Applied(); got != want {
				t.Fatalf("Applied() when ready = %d, want %d", got, want)
			}
			if got := f.Projection().LiveSessions(); got != tc.events {
				t.Fatalf("LiveSessions() when ready = %d, want %d", got, tc.events)
			}
			poll.For(t, wait, func() bool { return caughtUp.Load() > 0 }, func() string { return "CaughtUp has not run" })
			if got := appliedAtCaughtUp.Load(); got < want {
				t.Fatalf("CaughtUp ran with Applied() = %d, want at least %d", got, want)
			}

			// Events appended after Start are applied too, and do not run
			// CaughtUp again.
			id, _ := l.issue(t, "uk-late")
			l.append(t, "uk-late", id, domain.SessionRotated{Generation: 1, RefreshToken: domain.Digest{KeyID: "k1", Value: sha256.Sum256([]byte("next"))}})
			last := l.append(t, "uk-late", "", domain.UserDeactivated{UserID: "late"})
			waitApplied(t, f, last)
			if s, ok := f.Projection().Session(id); ok {
				t.Fatalf("session %s of a deactivated user is still held: %+v", id, s)
			}
			if u, ok := f.Projection().User("uk-late"); !ok || !u.Deactivated {
				t.Fatalf("User(uk-late) = %+v, %v; want deactivated", u, ok)
			}
			if err := f.Ready(); err != nil {
				t.Fatalf("Ready() while following = %v, want nil", err)
			}

			closeWithin(t, f) // waits for CaughtUp goroutines: the count is final
			if got := caughtUp.Load(); got != 1 {
				t.Fatalf("CaughtUp ran %d times in all, want 1", got)
			}
		})
	}
}

// TestUndecodableEventStopsTheProjection: an event the ledger wrote (its tag
// is valid) that this version cannot decode stops the projection, since
// skipping it would lose state. Messages without a valid tag never do (see
// TestForeignMessagesAreRefused).
func TestUndecodableEventStopsTheProjection(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before fills the stream before the follower starts; it returns
		// the sequence of the last event that must be applied.
		before func(*testing.T, *ledger) uint64
		// junkWhileFollowing publishes the junk once the follower is ready.
		junkWhileFollowing bool
	}{
		{
			name:   "junk first",
			before: func(t *testing.T, l *ledger) uint64 { l.publishFromNewerVersion(t); l.issueN(t, 2); return 0 },
		},
		{
			name: "junk between events during replay",
			before: func(t *testing.T, l *ledger) uint64 {
				seq := l.issueN(t, 3)
				l.publishFromNewerVersion(t)
				l.issueN(t, 2) // valid events after the junk must not be applied
				return seq
			},
		},
		{
			name:               "junk while following",
			before:             func(t *testing.T, l *ledger) uint64 { return l.issueN(t, 3) },
			junkWhileFollowing: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			wantApplied := tc.before(t, l)
			var caughtUp atomic.Int32
			f := newFollower(t, follower.Config{Stream: l.st, CaughtUp: func(context.Context) { caughtUp.Add(1) }})
			f.Start()

			if tc.junkWhileFollowing {
				if err, early := waitReady(t, f); err != nil || !early {
					t.Fatalf("WaitReady before the junk = %v (returned before its deadline: %v), want nil", err, early)
				}
				l.publishFromNewerVersion(t)
				poll.Until(t, wait, func() error {
					if err := f.Ready(); !errors.Is(err, domain.ErrProjectionFailed) {
						return fmt.Errorf("Ready() after junk = %v, want ErrProjectionFailed", err)
					}
					return nil
				})
			}

			// WaitReady must return as soon as the projection stops, not
			// wait for its context.
			err, early := waitReady(t, f)
			if !errors.Is(err, domain.ErrProjectionFailed) {
				t.Fatalf("WaitReady = %v, want an error matching ErrProjectionFailed", err)
			}
			if !early {
				t.Fatalf("WaitReady returned only when its context ended; want it to return when the projection stops")
			}
			if err := f.Ready(); !errors.Is(err, domain.ErrProjectionFailed) {
				t.Fatalf("Ready() = %v, want an error matching ErrProjectionFailed", err)
			}
			if !errors.Is(f.Projection().Err(), domain.ErrUndecodable) {
				t.Fatalf("Projection().Err() = %v, want an error matching ErrUndecodable", f.Projection().Err())
			}
			if got := f.Projection().Applied(); got != wantApplied {
				t.Fatalf("Applied() = %d, want %d (the event before the junk)", got, wantApplied)
			}

			// It stays stopped: a valid event appended now is not applied,
			// and nothing makes the follower ready again.
			l.issue(t, "uk-after")
			closeWithin(t, f) // the follower's goroutines are done: what it did is final
			if got := f.Projection().Applied(); got != wantApplied {
				t.Fatalf("Applied() after a valid event was appended = %d, want %d", got, wantApplied)
			}
			if err := f.Ready(); !errors.Is(err, domain.ErrProjectionFailed) {
				t.Fatalf("Ready() after a valid event was appended = %v, want an error matching ErrProjectionFailed", err)
			}
			if err, _ := waitReady(t, f); !errors.Is(err, domain.ErrProjectionFailed) {
				t.Fatalf("WaitReady again = %v, want an error matching ErrProjectionFailed", err)
			}
			wantCaughtUp := int32(0)
			if tc.junkWhileFollowing {
				wantCaughtUp = 1
			}
			if got := caughtUp.Load(); got != wantCaughtUp {
				t.Fatalf("CaughtUp ran %d times, want %d", got, wantCaughtUp)
			}
		})
	}
}

func TestRestoreFromSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after bool // events appended between the snapshot and the restore
	}{
		{"snapshot at the end of the stream", false},
		{"snapshot behind the stream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			snaps := l.snapshots(t)
			kept, _ := l.issue(t, "uk1")
			revoked, _ := l.issue(t, "uk1")
			rotated, _ := l.issue(t, "uk2")
			l.issueN(t, 7)
			l.append(t, "uk1", revoked, domain.SessionRevoked{Reason: domain.ReasonSignedOut, Actor: domain.ActorClient})
			l.append(t, "uk2", rotated, domain.SessionRotated{Generation: 1, RefreshToken: domain.Digest{KeyID: "k1", Value: sha256.Sum256([]byte("g1"))}})
			snapSeq := l.lastSeq(t)

			cfg := follower.Config{Stream: l.st, Snapshots: snaps, SnapshotInterval: 10 * time.Millisecond, SnapshotMinEvents: 1}
			writer := newFollower(t, cfg)
			writer.Start()
			if err, _ := waitReady(t, writer); err != nil {
				t.Fatalf("writer WaitReady = %v", err)
			}
			poll.Until(t, wait, func() error {
				got, err := snaps.LatestSeq(context.Background())
				if err != nil || got != snapSeq {
					return fmt.Errorf("LatestSeq() = %d, %v; want %d", got, err, snapSeq)
				}
				return nil
			})
			before := live(writer.Projection())
			wantKept, ok := writer.Projection().Session(kept)
			if !ok {
				t.Fatalf("writer has no session %s", kept)
			}
			closeWithin(t, writer)

			var extra string
			if tc.after {
				extra, _ = l.issue(t, "uk3")
				l.append(t, "uk1", kept, domain.SessionRotated{Generation: 1, RefreshToken: domain.Digest{KeyID: "k1", Value: sha256.Sum256([]byte("k1"))}})
			}
			want := l.lastSeq(t)

			var caughtUp atomic.Int32
			cfg.CaughtUp = func(context.Context) { caughtUp.Add(1) }
			f := newFollower(t, cfg)
			if got := f.Projection().Applied(); got != snapSeq || got == 0 {
				t.Fatalf("Applied() right after New = %d, want the snapshot's sequence %d", got, snapSeq)
			}
			if got, want := live(f.Projection()), before; !reflect.DeepEqual(got, want) {
				t.Fatalf("restored live sessions differ from the snapshot writer's:\n got %+v\nwant %+v", got, want)
			}
			if err := f.Ready(); err == nil {
				t.Fatal("Ready() = nil before Start, want an error: it has not caught up with the stream yet")
			}

			f.Start()
			if err, early := waitReady(t, f); err != nil || !early {
				t.Fatalf("WaitReady = %v (returned before its deadline: %v), want nil", err, early)
			}
			if got := f.Projection().Applied(); got != want {
				t.Fatalf("Applied() when ready = %d, want %d", got, want)
			}

			// The restored-and-replayed state is the state a full replay builds.
			ref := newFollower(t, follower.Config{Stream: l.st})
			ref.Start()
			if err, _ := waitReady(t, ref); err != nil {
				t.Fatalf("reference WaitReady = %v", err)
			}
			if got, want := live(f.Projection()), live(ref.Projection()); !reflect.DeepEqual(got, want) {
				t.Fatalf("live sessions after restore and replay differ from a full replay:\n got %+v\nwant %+v", got, want)
			}
			if got, want := f.Projection().LiveSessions(), len(before); !tc.after && got != want {
				t.Fatalf("LiveSessions() = %d, want %d as before the snapshot", got, want)
			}
			if _, ok := f.Projection().Session(revoked); ok {
				t.Fatalf("Session(%s) found; it was revoked before the snapshot", revoked)
			}
			got, ok := f.Projection().Session(kept)
			if !ok {
				t.Fatalf("Session(%s) not found after restore", kept)
			}
			if tc.after {
				if got.Generation != 1 {
					t.Fatalf("Session(%s).Generation = %d, want 1 (rotated after the snapshot)", kept, got.Generation)
				}
				if _, ok := f.Projection().Session(extra); !ok {
					t.Fatalf("Session(%s), issued after the snapshot, not found", extra)
				}
			} else if !reflect.DeepEqual(got, wantKept) {
				t.Fatalf("Session(%s) after restore:\n got %+v\nwant %+v", kept, got, wantKept)
			}
			closeWithin(t, f)
			if got := caughtUp.Load(); got != 1 {
				t.Fatalf("CaughtUp ran %d times, want 1", got)
			}
		})
	}
}

func TestUnusableSnapshotIsIgnored(t *testing.T) {
	// A snapshot of a longer stream: built from events the stream of this
	// test never held.
	longer := projections.NewSessions(nil)
	for seq := uint64(1); seq <= 50; seq++ {
		id := fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7K8M9Z%03d", seq)
		if err := longer.Apply(domain.Event{ID: id, Seq: seq, Time: t0, SessionID: id, UserKey: "ghost", Data: issuedPayload(id)}); err != nil {
			t.Fatal(err)
		}
	}
	longerData, longerSeq := longer.Snapshot(ledgertest.TagKeys)
	forged, _ := longer.Snapshot(otherKeys)

	for _, tc := range []struct {
		name string
		save func(context.Context, *eventstore.Snapshots) error // nil: no snapshot stored
	}{
		{"no snapshot", nil},
		{"sealed by someone without the ledger's key", func(ctx context.Context, s *eventstore.Snapshots) error {
			return s.Save(ctx, longerSeq, forged)
		}},
		{"not a snapshot", func(ctx context.Context, s *eventstore.Snapshots) error {
			return s.Save(ctx, 1, []byte("not a snapshot"))
		}},
		{"corrupted", func(ctx context.Context, s *eventstore.Snapshots) error {
			bad := slices.Clone(longerData)
			bad[len(bad)/2] ^= 0xff
			return s.Save(ctx, 1, bad)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			snaps := l.snapshots(t)
			want := l.issueN(t, 4)
			if tc.save != nil {
				if err := tc.save(context.Background(), snaps); err != nil {
					t.Fatalf("Save: %v", err)
				}
			}
			f := newFollower(t, follower.Config{Stream: l.st, Snapshots: snaps})
			if got := f.Projection().Applied(); got != 0 {
				t.Fatalf("Applied() right after New = %d, want 0 (snapshot ignored)", got)
			}
			if got := f.Projection().LiveSessions(); got != 0 {
				t.Fatalf("LiveSessions() right after New = %d, want 0 (snapshot ignored)", got)
			}
			f.Start()
			if err, _ := waitReady(t, f); err != nil {
				t.Fatalf("WaitReady = %v", err)
			}
			if got := f.Projection().Applied(); got != want {
				t.Fatalf("Applied() when ready = %d, want %d", got, want)
			}
			if got := f.Projection().LiveSessions(); got != 4 {
				t.Fatalf("LiveSessions() = %d, want 4 (the stream's, none of the snapshot's)", got)
			}
			if _, ok := f.Projection().User("ghost"); ok {
				t.Fatal("a user known only to the ignored snapshot is held")
			}
		})
	}
}

// TestSnapshotBeyondTheStreamRefusesToStart: the ledger's own snapshot covers
// more than the stream holds, so the stream lost history (deleted and created
// again, or replaced). Starting empty would forget every session: New refuses.
func TestSnapshotBeyondTheStreamRefusesToStart(t *testing.T) {
	longer := projections.NewSessions(nil)
	for seq := uint64(1); seq <= 50; seq++ {
		id := fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7K8M9Z%03d", seq)
		if err := longer.Apply(domain.Event{ID: id, Seq: seq, Time: t0, SessionID: id, UserKey: fmt.Sprintf("ghost%d", seq), Data: issuedPayload(id)}); err != nil {
			t.Fatal(err)
		}
	}
	data, seq := longer.Snapshot(ledgertest.TagKeys)
	l := newLedger(t)
	snaps := l.snapshots(t)
	l.issueN(t, 4)
	if err := snaps.Save(context.Background(), seq, data); err != nil {
		t.Fatal(err)
	}
	_, err := follower.New(context.Background(), follower.Config{Stream: l.st, Snapshots: snaps, Sealer: ledgertest.TagKeys})
	if !errors.Is(err, domain.ErrHistoryLost) {
		t.Fatalf("New = %v, want ErrHistoryLost", err)
	}
}

// otherKeys are someone else's: what they seal, the ledger does not trust.
var otherKeys = func() *integrity.TagKeys {
	k, err := integrity.NewTagKeys("t1", map[string][]byte{"t1": bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		panic(err)
	}
	return k
}()

// flakyStream is the real store, except that its first Follow loses the
// consumer after delivering lose events, as a failover would.
type flakyStream struct {
	*eventstore.Store
	lose int

	mu    sync.Mutex
	calls []uint64 // afterSeq of each Follow
}

var errConsumerLost = errors.New("consumer lost")

func (s *flakyStream) Follow(ctx context.Context, afterSeq uint64, apply func(domain.Record) error) error {
	s.mu.Lock()
	s.calls = append(s.calls, afterSeq)
	first := len(s.calls) == 1
	s.mu.Unlock()
	if !first {
		return s.Store.Follow(ctx, afterSeq, apply)
	}
	n := 0
	return s.Store.Follow(ctx, afterSeq, func(e domain.Record) error {
		if n == s.lose {
			return errConsumerLost
		}
		n++
		return apply(e)
	})
}

func (s *flakyStream) followCalls() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func TestResumesAfterLostConsumer(t *testing.T) {
	l := newLedger(t)
	want := l.issueN(t, 10)
	stream := &flakyStream{Store: l.st, lose: 4}
	var caughtUp atomic.Int32
	f := newFollower(t, follower.Config{Stream: stream, CaughtUp: func(context.Context) { caughtUp.Add(1) }})
	f.Start()
	if err, early := waitReady(t, f); err != nil || !early {
		t.Fatalf("WaitReady = %v (returned before its deadline: %v), want nil after resuming", err, early)
	}
	if got := f.Projection().Applied(); got != want {
		t.Fatalf("Applied() = %d, want %d", got, want)
	}
	if got, want := stream.followCalls(), []uint64{0, 4}; !slices.Equal(got, want) {
		t.Fatalf("Follow called with afterSeq %v, want %v (resume after the last applied event)", got, want)
	}
	last := l.issueN(t, 2)
	waitApplied(t, f, last)
	closeWithin(t, f)
	if got := caughtUp.Load(); got != 1 {
		t.Fatalf("CaughtUp ran %d times, want 1", got)
	}
}

func TestClose(t *testing.T) {
	for _, tc := range []struct {
		name      string
		start     bool
		snapshots bool
	}{
		{name: "without Start"},
		{name: "after Start", start: true},
		{name: "after Start, writing snapshots", start: true, snapshots: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			l.issueN(t, 5)
			cfg := follower.Config{Stream: l.st}
			if tc.snapshots {
				cfg.Snapshots, cfg.SnapshotInterval, cfg.SnapshotMinEvents = l.snapshots(t), 10*time.Millisecond, 1
			}
			f := newFollower(t, cfg)
			if tc.start {
				f.Start()
				if err, _ := waitReady(t, f); err != nil {
					t.Fatalf("WaitReady = %v", err)
				}
			}
			closeWithin(t, f)
			closeWithin(t, f) // a second Close is harmless
			if tc.start {
				// Closed, it follows no more: a new event that another
				// follower sees is not applied.
				applied := f.Projection().Applied()
				last := l.issueN(t, 1)
				other := newFollower(t, follower.Config{Stream: l.st})
				other.Start()
				waitApplied(t, other, last)
				if got := f.Projection().Applied(); got != applied {
					t.Fatalf("Applied() after Close moved from %d to %d", applied, got)
				}
			}
		})
	}
}

func TestCloseEndsAndWaitsForCaughtUp(t *testing.T) {
	l := newLedger(t)
	l.issueN(t, 3)
	var running, cancelled, returned atomic.Bool
	release, giveUp := make(chan struct{}), make(chan struct{})
	releaseCaughtUp := sync.OnceFunc(func() { close(release) })
	f := newFollower(t, follower.Config{Stream: l.st, CaughtUp: func(ctx context.Context) {
		running.Store(true)
		select {
		case <-ctx.Done():
			cancelled.Store(true)
		case <-giveUp: // the test is over: do not hang it
		}
		<-release
		returned.Store(true)
	}})
	// Registered after newFollower's, so it runs before that Close.
	t.Cleanup(func() { close(giveUp); releaseCaughtUp() })
	f.Start()
	poll.For(t, wait, running.Load, func() string { return "CaughtUp has not started" })

	var returnedWhenClosed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Close()
		returnedWhenClosed.Store(returned.Load())
	}()
	poll.For(t, wait, cancelled.Load, func() string { return "CaughtUp's context has not ended after Close" })
	releaseCaughtUp()
	poll.Until(t, wait, func() error {
		select {
		case <-done:
			return nil
		default:
			return errors.New("Close has not returned after CaughtUp did")
		}
	})
	if !returnedWhenClosed.Load() {
		t.Fatal("Close returned while CaughtUp was still running; want it to wait for CaughtUp")
	}
}

// oneAtATime loses its consumer after every event it delivers, as a stream
// whose leader keeps moving would.
type oneAtATime struct{ *eventstore.Store }

func (s oneAtATime) Follow(ctx context.Context, afterSeq uint64, apply func(domain.Record) error) error {
	delivered := false
	return s.Store.Follow(ctx, afterSeq, func(e domain.Record) error {
		if delivered {
			return errConsumerLost
		}
		delivered = true
		return apply(e)
	})
}

// TestBackoffResetsAfterProgress: each lost consumer that had made progress
// is a new loss, resumed after the shortest pause (100 ms), not after a pause
// that kept doubling since the first loss (100 ms, 200 ms, … 2 s: about 7 s
// for these eight events).
func TestBackoffResetsAfterProgress(t *testing.T) {
	l := newLedger(t)
	want := l.issueN(t, 8)
	f := newFollower(t, follower.Config{Stream: oneAtATime{l.st}})
	start := time.Now()
	f.Start()
	poll.Until(t, 3*time.Second, func() error {
		if got := f.Projection().Applied(); got < want {
			return fmt.Errorf("applied %d of %d events after %v", got, want, time.Since(start))
		}
		return nil
	})
}
