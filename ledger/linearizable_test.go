package ledger_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/projections"
)

// gate holds back the records a projection applies, so a test can make an
// instance exactly as stale as it wants: while closed, the projection
// applies nothing after what it has.
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	closed bool
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) set(closed bool) {
	g.mu.Lock()
	g.closed = closed
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) wait() {
	g.mu.Lock()
	for g.closed {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// staleInstance is a second ledger on srv whose projection follows the
// stream through g, so the test decides when it sees another instance's
// writes.
func staleInstance(t *testing.T, srv *natstest.Server, clk *clock, g *gate, signer *accesstoken.Signer) (*ledger.Ledger, *projections.Sessions) {
	t.Helper()
	st, err := eventstore.Open(context.Background(), srv.Connect(t), eventstore.Config{Tags: ledgertest.TagKeys})
	if err != nil {
		t.Fatal(err)
	}
	proj := projections.NewSessions(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = st.Follow(ctx, 0, func(r domain.Record) error {
			g.wait()
			return proj.ApplyRecord(r)
		})
	}()
	t.Cleanup(func() { g.set(false); cancel(); <-done })
	return ledger.New(st, proj, signer, ledgertest.Keys, ledger.Config{Now: clk.Now}), proj
}

// answerAfter runs read in the background and requires that it has not
// answered while the gate is closed (it waits for the write it must see),
// then opens the gate and returns the answer.
func answerAfter[T any](t *testing.T, g *gate, read func() (T, error)) T {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := read()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		t.Fatalf("answered %+v (err %v) from a projection that has not applied a write that returned before the read began", r.v, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	g.set(false)
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}

// TestReadsOnAStaleInstanceWaitForWritesThatReturned: after a revoke, a
// rotation or a revoke-all has returned on instance A, instance B never
// answers from before it, however far behind its projection is, while
// answers that no write could change come at once.
func TestReadsOnAStaleInstanceWaitForWritesThatReturned(t *testing.T) {
	srv, clk, a := setup(t, time.Minute)
	g := newGate()
	b, bproj := staleInstance(t, srv, clk, g, a.Signer)
	ctx := context.Background()

	issue := func(user string) ledger.TokenPair {
		t.Helper()
		p, err := a.Issue(ctx, ledger.IssueRequest{UserID: user})
		if err != nil {
			t.Fatal(err)
		}
		if err := bproj.WaitApplied(ctx, a.Proj.Applied()); err != nil {
			t.Fatal(err)
		}
		return p
	}
	introspect := func(tok string) func() (bool, error) {
		return func() (bool, error) {
			in, err := b.Introspect(ctx, tok)
			return in.Active, err
		}
	}

	// A revoke on A: B must not call the access token active.
	p := issue("alice")
	g.set(true)
	if err := a.RevokeSession(ctx, p.SessionID); err != nil {
		t.Fatal(err)
	}
	if answerAfter(t, g, introspect(p.AccessToken)) {
		t.Fatal("B called an access token of a revoked session active")
	}
	// Now final on B: answered without waiting, even with the gate closed.
	g.set(true)
	if in, err := b.Introspect(ctx, p.RefreshToken); err != nil || in.Active {
		t.Fatalf("refresh token of an ended session: %+v %v", in, err)
	}
	g.set(false)

	// A rotation on A: the rotated-out token is not active on B, the new one is.
	p = issue("bob")
	g.set(true)
	next, err := a.Refresh(ctx, p.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if answerAfter(t, g, introspect(p.RefreshToken)) {
		t.Fatal("B called a rotated-out refresh token active")
	}
	g.set(true)
	if in, err := b.Introspect(ctx, p.RefreshToken); err != nil || in.Active {
		t.Fatalf("rotated-out refresh token, asked again: %+v %v", in, err) // final now: no wait
	}
	g.set(false)
	if in, err := b.Introspect(ctx, next.RefreshToken); err != nil || !in.Active {
		t.Fatalf("current refresh token on B: %+v %v", in, err)
	}

	// A revoke-all on A: B's listing is empty and the session inactive.
	p = issue("carol")
	g.set(true)
	if err := a.RevokeUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if list := answerAfter(t, g, func() ([]domain.Session, error) {
		list, _, err := b.Sessions(ctx, "carol", ledger.Page{})
		return list, err
	}); len(list) != 0 {
		t.Fatalf("B lists %d sessions after a revoke-all returned on A", len(list))
	}
	if in, err := b.Introspect(ctx, p.AccessToken); err != nil || in.Active {
		t.Fatalf("access token after revoke-all: %+v %v", in, err)
	}

	// A session issued on A: B lists it.
	g.set(true)
	if _, err := a.Issue(ctx, ledger.IssueRequest{UserID: "dave"}); err != nil {
		t.Fatal(err)
	}
	if list := answerAfter(t, g, func() ([]domain.Session, error) {
		list, _, err := b.Sessions(ctx, "dave", ledger.Page{})
		return list, err
	}); len(list) != 1 {
		t.Fatalf("B lists %d sessions of a user with one issued on A", len(list))
	}
}

// TestSignOutWithATokenFromAnotherInstance: a refresh token handed out by
// a rotation on instance A signs the session out on instance B even while
// B has not applied that rotation (the linearizability test caught B
// answering 200 and revoking nothing).
func TestSignOutWithATokenFromAnotherInstance(t *testing.T) {
	srv, clk, a := setup(t, time.Minute)
	g := newGate()
	b, bproj := staleInstance(t, srv, clk, g, a.Signer)
	ctx := context.Background()
	p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bproj.WaitApplied(ctx, a.Proj.Applied()); err != nil {
		t.Fatal(err)
	}
	g.set(true)
	next, err := a.Refresh(ctx, p.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	answerAfter(t, g, func() (struct{}, error) { return struct{}{}, b.SignOut(ctx, next.RefreshToken) })
	for name, l := range map[string]*ledger.Ledger{"A": a.Ledger, "B": b} {
		if in, err := l.Introspect(ctx, next.AccessToken); err != nil || in.Active {
			t.Fatalf("%s: the access token after sign-out on B: %+v %v", name, in, err)
		}
		if _, err := l.Refresh(ctx, next.RefreshToken); !errors.Is(err, domain.ErrSessionEnded) && !errors.Is(err, domain.ErrTokenUnknown) {
			t.Fatalf("%s: refresh after sign-out on B: %v", name, err)
		}
	}
}

// slowAcks is a real store whose appends are acknowledged late: the event is
// stored at once, but the ack reaches the ledger only after the request's
// deadline.
type slowAcks struct {
	*eventstore.Store
	delay time.Duration
}

func (s slowAcks) Append(ctx context.Context, e domain.Event) (uint64, error) {
	seq, err := s.Store.Append(context.WithoutCancel(ctx), e)
	time.Sleep(s.delay)
	return seq, err
}

// TestNoSuccessAfterTheDeadline: a command whose write landed but whose
// answer is ready only after the request's deadline answers ErrUnavailable,
// and the client's retry within the grace window gets the same successor.
func TestNoSuccessAfterTheDeadline(t *testing.T) {
	srv, clk, a := setup(t, time.Minute)
	ctx := context.Background()
	p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	const budget = 200 * time.Millisecond
	slow := ledger.New(slowAcks{a.Store, 2 * budget}, a.Proj, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now, ReuseGrace: time.Minute, RequestTimeout: budget})
	start := time.Now()
	_, err = slow.Refresh(ctx, p.RefreshToken)
	if !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("refresh answered after its deadline: %v, want ErrUnavailable", err)
	}
	t.Logf("answered in %v", time.Since(start))
	// The rotation did land: the retry is tolerated and gets its successor.
	retry, err := a.Refresh(ctx, p.RefreshToken)
	if err != nil || retry.Outcome != domain.OutcomeTolerated {
		t.Fatalf("retry: %+v %v, want the tolerated successor", retry.Outcome, err)
	}
	_ = srv
}

// TestOneBudgetWhenTheStreamIsGone: with the stream unreachable, every
// command and read on an instance that holds the session, and on one that
// does not, answers ErrUnavailable within its one budget instead of
// retrying each step for its own timeout.
func TestOneBudgetWhenTheStreamIsGone(t *testing.T) {
	srv, clk, a := setup(t, time.Minute)
	ctx := context.Background()
	p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	const budget = 300 * time.Millisecond
	held := ledger.New(a.Store, a.Proj, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now, ReuseGrace: time.Minute, RequestTimeout: budget})
	// An instance that does not hold the session: an empty projection.
	empty := projections.NewSessions(nil)
	cold := ledger.New(a.Store, empty, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now, ReuseGrace: time.Minute, RequestTimeout: budget})
	srv.Stop()

	var wg sync.WaitGroup
	for name, l := range map[string]*ledger.Ledger{"holds the session": held, "does not hold it": cold} {
		calls := map[string]func() error{
			"refresh":    func() error { _, err := l.Refresh(ctx, p.RefreshToken); return err },
			"sign out":   func() error { return l.SignOut(ctx, p.RefreshToken) },
			"introspect": func() error { _, err := l.Introspect(ctx, p.AccessToken); return err },
			"issue":      func() error { _, err := l.Issue(ctx, ledger.IssueRequest{UserID: "bob"}); return err },
			"list":       func() error { _, _, err := l.Sessions(ctx, "alice", ledger.Page{}); return err },
			"history":    func() error { _, err := l.History(ctx, p.SessionID); return err },
			"revoke":     func() error { return l.RevokeSession(ctx, p.SessionID) },
			"revoke all": func() error { return l.RevokeUser(ctx, "alice") },
			"deactivate": func() error { return l.Deactivate(ctx, "alice") },
		}
		for call, fn := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				err := fn()
				took := time.Since(start)
				if !errors.Is(err, domain.ErrUnavailable) {
					t.Errorf("%s on an instance that %s: %v, want ErrUnavailable", call, name, err)
				}
				if took > budget+budget/2 {
					t.Errorf("%s on an instance that %s took %v, budget %v", call, name, took, budget)
				}
			}()
		}
	}
	wg.Wait()
}

// racingStore is a real store on which, just before the user's events are
// read, another instance rotates the session and then revokes all of the
// user's sessions: both land between History's two reads.
type racingStore struct {
	*eventstore.Store
	race func()
}

func (s racingStore) UserEvents(ctx context.Context, userKey string, afterSeq uint64) ([]domain.Event, error) {
	s.race()
	return s.Store.UserEvents(ctx, userKey, afterSeq)
}

// TestHistoryRacingARevokeAll: a history read while a rotation and then a
// revoke-all land holds both, never the end without what came before it.
func TestHistoryRacingARevokeAll(t *testing.T) {
	_, clk, a := setup(t, time.Minute)
	ctx := context.Background()
	p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	race := func() {
		once.Do(func() {
			if _, err := a.Refresh(ctx, p.RefreshToken); err != nil {
				t.Error(err)
			}
			if err := a.RevokeUser(ctx, "alice"); err != nil {
				t.Error(err)
			}
		})
	}
	l := ledger.New(racingStore{a.Store, race}, a.Proj, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now})
	events, err := l.History(ctx, p.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	var types []domain.EventType
	for _, e := range events {
		types = append(types, e.Type())
	}
	want := []domain.EventType{domain.TypeSessionIssued, domain.TypeSessionRotated, domain.TypeUserSessionsRevoked}
	if len(types) != len(want) || types[0] != want[0] || types[1] != want[1] || types[2] != want[2] {
		t.Fatalf("history %v, want %v", types, want)
	}
}

// countingStore is a real store that counts the lookups a read makes.
type countingStore struct {
	*eventstore.Store
	lookups *atomic.Int64
}

func (s countingStore) LastSeq(ctx context.Context) (uint64, error) {
	s.lookups.Add(1)
	return s.Store.LastSeq(ctx)
}

// TestFinalAnswersMakeNoRoundTrip: an introspection answer that no later
// event can change comes from the projection without asking the stream; one
// that could change (active) asks once, and so does one about a session the
// projection no longer holds.
func TestFinalAnswersMakeNoRoundTrip(t *testing.T) {
	_, clk, a := setup(t, time.Minute)
	ctx := context.Background()
	var lookups atomic.Int64
	l := ledger.New(countingStore{a.Store, &lookups}, a.Proj, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now, ReuseGrace: time.Minute})
	live, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	next, err := a.Refresh(ctx, live.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := a.Issue(ctx, ledger.IssueRequest{UserID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeSession(ctx, ended.SessionID); err != nil {
		t.Fatal(err)
	}
	forged := []byte(next.RefreshToken) // another secret, still well-formed
	if i := len(forged) - 2; forged[i] == 'A' {
		forged[i] = 'B'
	} else {
		forged[i] = 'A'
	}
	for name, c := range map[string]struct {
		token   string
		active  bool
		lookups int64
	}{
		"current refresh token":     {next.RefreshToken, true, 1},
		"access token":              {next.AccessToken, true, 1},
		"rotated-out refresh token": {live.RefreshToken, false, 0},
		"forged refresh token":      {string(forged), false, 0},
		// The projection drops an ended session, so whether it ended or
		// was issued a moment ago elsewhere only the stream can tell.
		"ended session's access": {ended.AccessToken, false, 1},
		"not a token":            {"nonsense", false, 0},
	} {
		lookups.Store(0)
		in, err := l.Introspect(ctx, c.token)
		if err != nil || in.Active != c.active || lookups.Load() != c.lookups {
			t.Errorf("%s: active %v (err %v) after %d stream lookups, want active %v after %d", name, in.Active, err, lookups.Load(), c.active, c.lookups)
		}
	}
}
