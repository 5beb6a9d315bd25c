package ledger_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
)

// clock is a settable clock shared by instances.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var start = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// instance is one ledger with its own projection following a shared stream.
type instance = ledgertest.Ledger

func newInstance(t *testing.T, srv *natstest.Server, clk *clock, grace time.Duration) *instance {
	t.Helper()
	return ledgertest.New(t, srv, "https://ledger.test", "api", ledger.Config{Now: clk.Now, ReuseGrace: grace})
}

// setup starts a JetStream, a clock at start, and one ledger instance on them.
func setup(t *testing.T, grace time.Duration) (*natstest.Server, *clock, *instance) {
	t.Helper()
	srv := natstest.Start(t, "")
	clk := &clock{}
	clk.Set(start)
	return srv, clk, newInstance(t, srv, clk, grace)
}

func history(t *testing.T, in *instance, sid string) []domain.EventType {
	t.Helper()
	events, err := in.History(context.Background(), sid)
	if err != nil {
		t.Fatal(err)
	}
	var types []domain.EventType
	for _, e := range events {
		types = append(types, e.Type())
	}
	return types
}

func countType(types []domain.EventType, want domain.EventType) int {
	n := 0
	for _, t := range types {
		if t == want {
			n++
		}
	}
	return n
}

func TestSweeperRecordsExpiryAtTheDeadlineOnce(t *testing.T) {
	_, clk, a := setup(t, 0)
	ctx := context.Background()

	hs, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice", PolicyName: domain.PolicyHighSecurity}) // 30 min inactivity, 24 h absolute
	if err != nil {
		t.Fatal(err)
	}
	mob, err := a.Issue(ctx, ledger.IssueRequest{UserID: "bob", PolicyName: domain.PolicyMobile}) // no inactivity timeout, 180 d
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(30 * time.Minute); !hs.RefreshTokenExpiresAt.Equal(want) {
		t.Fatalf("refresh token expires at %v, want the inactivity deadline %v", hs.RefreshTokenExpiresAt, want)
	}
	if hs.ExpiresIn != 300 {
		t.Fatalf("high_security access token lives %ds, want 300", hs.ExpiresIn)
	}

	clk.Advance(30*time.Minute - time.Second)
	if n := a.ExpireDue(ctx); n != 0 {
		t.Fatalf("one second before the deadline: %d expired", n)
	}
	clk.Advance(time.Second) // exactly at the deadline
	if n := a.ExpireDue(ctx); n != 1 {
		t.Fatalf("at the deadline: %d expired, want 1", n)
	}
	if n := a.ExpireDue(ctx); n != 0 {
		t.Fatalf("second sweep expired %d more", n)
	}
	types := history(t, a, hs.SessionID)
	if countType(types, domain.TypeSessionExpired) != 1 {
		t.Fatalf("history %v", types)
	}
	events, _ := a.History(ctx, hs.SessionID)
	if r := events[len(events)-1].Data.(domain.SessionExpired).Reason; r != domain.ExpiredInactivity {
		t.Fatalf("reason %q, want inactivity", r)
	}
	if _, err := a.Refresh(ctx, hs.RefreshToken); err == nil {
		t.Fatal("refresh of an expired session succeeded")
	}

	// The mobile session has no inactivity timeout: only its absolute lifetime ends it.
	clk.Set(start.Add(180*24*time.Hour - time.Second))
	if n := a.ExpireDue(ctx); n != 0 {
		t.Fatalf("mobile session expired %d early", n)
	}
	clk.Advance(time.Second)
	if n := a.ExpireDue(ctx); n != 1 {
		t.Fatalf("mobile session at its absolute deadline: %d expired", n)
	}
	events, _ = a.History(ctx, mob.SessionID)
	if r := events[len(events)-1].Data.(domain.SessionExpired).Reason; r != domain.ExpiredAbsolute {
		t.Fatalf("reason %q, want absolute", r)
	}
}

func TestRefreshMovesTheInactivityDeadline(t *testing.T) {
	_, clk, a := setup(t, 0)
	ctx := context.Background()
	p := domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600}
	s, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice", CustomPolicy: &p})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(599 * time.Second)
	s, err = a.Refresh(ctx, s.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(1199 * time.Second); !s.RefreshTokenExpiresAt.Equal(want) {
		t.Fatalf("after a refresh the token expires at %v, want %v", s.RefreshTokenExpiresAt, want)
	}
	clk.Advance(599 * time.Second)
	if n := a.ExpireDue(ctx); n != 0 {
		t.Fatal("expired by the inactivity deadline that the refresh had moved")
	}
	clk.Advance(time.Second) // 600 s after the refresh, nothing in between
	if _, err := a.Refresh(ctx, s.RefreshToken); !errors.Is(err, domain.ErrSessionExpired) {
		t.Fatalf("refresh at the moved inactivity deadline: %v, want ErrSessionExpired", err)
	}
}

func TestAbsoluteLifetimeCapsTokens(t *testing.T) {
	_, clk, a := setup(t, 0)
	ctx := context.Background()
	p := domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600}
	s, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice", CustomPolicy: &p})
	if err != nil {
		t.Fatal(err)
	}
	for elapsed := 500; elapsed <= 3500; elapsed += 500 { // stay active
		clk.Set(start.Add(time.Duration(elapsed) * time.Second))
		if s, err = a.Refresh(ctx, s.RefreshToken); err != nil {
			t.Fatalf("refresh at %ds: %v", elapsed, err)
		}
	}
	if want := start.Add(3600 * time.Second); !s.RefreshTokenExpiresAt.Equal(want) {
		t.Fatalf("refresh token expires at %v, want the absolute deadline %v", s.RefreshTokenExpiresAt, want)
	}
	clk.Set(start.Add(3590 * time.Second))
	if s, err = a.Refresh(ctx, s.RefreshToken); err != nil || s.ExpiresIn != 10 {
		t.Fatalf("access token near the end lives %ds (err %v), want 10: never past the session", s.ExpiresIn, err)
	}
	clk.Set(start.Add(3600 * time.Second))
	if _, err := a.Refresh(ctx, s.RefreshToken); !errors.Is(err, domain.ErrSessionExpired) {
		t.Fatalf("refresh at the absolute deadline: %v", err)
	}
	events, _ := a.History(ctx, s.SessionID)
	if r := events[len(events)-1].Data.(domain.SessionExpired).Reason; r != domain.ExpiredAbsolute {
		t.Fatalf("reason %q, want absolute", r)
	}
}

func TestManyInstancesSweepEachExpiryOnce(t *testing.T) {
	srv, clk, a := setup(t, 0)
	b := newInstance(t, srv, clk, 0)
	c := newInstance(t, srv, clk, 0)
	ctx := context.Background()
	p := domain.Policy{AccessTokenTTL: 1, AbsoluteLifetime: 10, InactivityTimeout: 5}
	var ids []string
	for i := 0; i < 30; i++ {
		s, err := a.Issue(ctx, ledger.IssueRequest{UserID: "user-" + string(rune('a'+i%5)), CustomPolicy: &p})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.SessionID)
	}
	last, _ := a.Store.LastSeq(ctx)
	for _, in := range []*instance{b, c} {
		if err := in.Proj.WaitApplied(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(5 * time.Second)
	var wg sync.WaitGroup
	var total atomic.Int64
	for _, in := range []*instance{a, b, c} {
		wg.Add(1)
		go func(in *instance) {
			defer wg.Done()
			total.Add(int64(in.ExpireDue(ctx)))
		}(in)
	}
	wg.Wait()
	if total.Load() != int64(len(ids)) {
		t.Fatalf("instances recorded %d expiries for %d sessions", total.Load(), len(ids))
	}
	for _, id := range ids {
		if n := countType(history(t, a, id), domain.TypeSessionExpired); n != 1 {
			t.Fatalf("session %s has %d expiry events", id, n)
		}
	}
}

func TestGraceWindowEdges(t *testing.T) {
	_, clk, a := setup(t, 10*time.Second)
	ctx := context.Background()
	s0, _ := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	s1, err := a.Refresh(ctx, s0.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(10*time.Second - time.Nanosecond)
	retry, err := a.Refresh(ctx, s0.RefreshToken)
	if err != nil || retry.RefreshToken != s1.RefreshToken || retry.Outcome != domain.OutcomeTolerated || retry.AccessToken == s1.AccessToken {
		t.Fatalf("retry inside the window: %v, outcome %q, same successor %v", err, retry.Outcome, retry.RefreshToken == s1.RefreshToken)
	}
	clk.Advance(time.Nanosecond) // exactly grace after the rotation
	if _, err := a.Refresh(ctx, s0.RefreshToken); !errors.Is(err, domain.ErrTokenReused) {
		t.Fatalf("retry at the end of the window: %v, want ErrTokenReused", err)
	}
	if _, err := a.Refresh(ctx, s1.RefreshToken); err == nil {
		t.Fatal("the family survived reuse")
	}
	types := history(t, a, s0.SessionID)
	want := []domain.EventType{domain.TypeSessionIssued, domain.TypeSessionRotated, domain.TypeSessionReused, domain.TypeSessionReused, domain.TypeSessionRevoked}
	if len(types) != len(want) {
		t.Fatalf("history %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("history %v, want %v", types, want)
		}
	}
}
