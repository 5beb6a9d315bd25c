package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/ledger"
)

// forge returns refresh tokens the ledger never issued, built from a
// genuine one as an attacker with a session of their own would: for a
// session that does not exist, for the genuine session at generation 0
// (with a secret of their choosing), with the tag of another token, in the
// legacy form, and garbage of the right shape.
func forge(t *testing.T, genuine string) map[string]string {
	t.Helper()
	tok, err := domain.ParseRefreshToken(genuine)
	if err != nil {
		t.Fatal(err)
	}
	unknown := tok
	unknown.SessionID = ulid.Make().String()
	old := tok
	old.Generation = 0
	old.Secret[0] ^= 0xff
	legacyUnknown := unknown
	legacyUnknown.Tagged = false
	legacyOld := old
	legacyOld.Tagged = false
	return map[string]string{
		"unknown session":            unknown.Encode(),
		"generation 0 of a live one": old.Encode(),
		"legacy, unknown session":    legacyUnknown.Encode(),
		"legacy, generation 0":       legacyOld.Encode(),
		"garbage":                    domain.RefreshTokenPrefix + strings.Repeat("A", domain.RefreshTokenLen-len(domain.RefreshTokenPrefix)),
	}
}

// TestForgedRefreshTokensCostNoLookup: a refresh token the ledger never
// issued is refused before any stream lookup and records nothing, whatever
// its session and generation; the work for one, measured in allocations,
// is that of a parse and one HMAC, also for a session 1,000 generations on
// (domain's TestOldTokensNeedNoChainWalk: 10,000).
// Before tags, an unknown session cost a wildcard stream lookup growing
// with the number of users (17.9 ms of CPU at 55k users), and a forged
// generation-0 token about 20,000 HMACs (25.6 ms).
func TestForgedRefreshTokensCostNoLookup(t *testing.T) {
	_, clk, a := setup(t, time.Minute)
	ctx := context.Background()
	var lookups atomic.Int64
	l := ledger.New(countingStore{a.Store, &lookups}, a.Proj, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now, ReuseGrace: time.Minute})
	pair, err := l.Issue(ctx, ledger.IssueRequest{UserID: "mallory"})
	if err != nil {
		t.Fatal(err)
	}
	const generations = 1_000
	rt := pair.RefreshToken
	for range generations {
		p, err := l.Refresh(ctx, rt)
		if err != nil {
			t.Fatal(err)
		}
		rt = p.RefreshToken
	}
	last, _ := a.Store.LastSeq(ctx)
	for name, forged := range forge(t, rt) {
		lookups.Store(0)
		_, err := l.Refresh(ctx, forged)
		if !errors.Is(err, domain.ErrTokenUnknown) && !errors.Is(err, domain.ErrTokenMalformed) {
			t.Errorf("%s: %v, want refused as unknown", name, err)
		}
		if n := lookups.Load(); n != 0 {
			t.Errorf("%s: %d stream lookups", name, n)
		}
		allocs := testing.AllocsPerRun(20, func() { _, _ = l.Refresh(ctx, forged) })
		t.Logf("%s: refused with %v allocations, no lookup", name, allocs)
		if allocs > 40 {
			t.Errorf("%s: %v allocations per refusal: more than a parse and an HMAC", name, allocs)
		}
		if err := l.SignOut(ctx, forged); err != nil || lookups.Load() != 0 {
			t.Errorf("%s: sign-out: %v after %d lookups", name, err, lookups.Load())
		}
		if in, err := l.Introspect(ctx, forged); err != nil || in.Active || lookups.Load() != 0 {
			t.Errorf("%s: introspection: %+v %v after %d lookups", name, in, err, lookups.Load())
		}
	}
	if now, _ := a.Store.LastSeq(ctx); now != last {
		t.Fatalf("forged tokens appended %d messages", now-last)
	}
	if s, _ := a.Proj.Session(pair.SessionID); !s.Live() || s.Generation != generations {
		t.Fatalf("the attacked session: %+v", s)
	}
	// The genuine rotated-out first token is still known for what it is:
	// reuse, which revokes the session, with no walk of 10,000 rotations.
	if _, err := l.Refresh(ctx, pair.RefreshToken); !errors.Is(err, domain.ErrTokenReused) {
		t.Fatalf("the genuine first token, %d rotations later: %v, want reuse", generations, err)
	}
}

// TestLegacyTokensStillRefresh: a refresh token issued before tags (legacy
// form) of a live session refreshes once more, to a tagged successor, and a
// rotated-out legacy token is still reuse.
func TestLegacyTokensStillRefresh(t *testing.T) {
	_, _, a := setup(t, 0)
	ctx := context.Background()
	pair, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// What an older ledger handed out: the same token without its tag.
	tok, _ := domain.ParseRefreshToken(pair.RefreshToken)
	tok.Tagged = false
	legacy := tok.Encode()
	if len(legacy) != domain.LegacyRefreshTokenLen {
		t.Fatalf("legacy form of %d characters", len(legacy))
	}
	next, err := a.Refresh(ctx, legacy)
	if err != nil {
		t.Fatalf("refreshing a legacy token: %v", err)
	}
	if len(next.RefreshToken) != domain.RefreshTokenLen {
		t.Fatalf("the successor of a legacy token is not tagged: %d characters", len(next.RefreshToken))
	}
	if _, err := a.Refresh(ctx, next.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Refresh(ctx, legacy); !errors.Is(err, domain.ErrTokenReused) {
		t.Fatalf("a rotated-out legacy token: %v, want reuse", err)
	}
}

// TestOneUserWithManySessionsNeverConflicts: writes to different sessions
// of one user do not conflict. With optimistic concurrency on the whole
// user, 5,000 sessions of one user refreshing at once ran at 31/s with 21 %
// 503s; here every refresh succeeds at the first attempt.
func TestOneUserWithManySessionsNeverConflicts(t *testing.T) {
	srv, clk, _ := setup(t, time.Minute)
	var conflicts atomic.Int64
	cfg := ledger.Config{Now: clk.Now, ReuseGrace: time.Minute, OnConflict: func() { conflicts.Add(1) }}
	// Two instances: writes from both race for the same user.
	a := ledgertest.New(t, srv, "https://ledger.test", "api", cfg)
	b := ledgertest.New(t, srv, "https://ledger.test", "api", cfg)
	ctx := context.Background()
	const sessions, rounds = 200, 5
	tokens := make([]string, sessions)
	var wg sync.WaitGroup
	errs := make(chan error, sessions*rounds)
	for i := range sessions {
		wg.Go(func() {
			in := []*ledgertest.Ledger{a, b}[i%2]
			p, err := in.Issue(ctx, ledger.IssueRequest{UserID: "fleet", Device: domain.Device{Name: fmt.Sprint("device ", i)}})
			if err != nil {
				errs <- err
				return
			}
			tokens[i] = p.RefreshToken
		})
	}
	wg.Wait()
	for round := range rounds {
		for i := range sessions {
			wg.Go(func() {
				in := []*ledgertest.Ledger{a, b}[(i+round)%2]
				p, err := in.Refresh(ctx, tokens[i])
				if err != nil {
					errs <- fmt.Errorf("session %d, round %d: %w", i, round, err)
					return
				}
				tokens[i] = p.RefreshToken
			})
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := conflicts.Load(); n != 0 {
		t.Fatalf("%d appends conflicted among %d sessions of one user", n, sessions)
	}
	list, _, err := a.Sessions(ctx, "fleet", ledger.Page{Limit: ledger.MaxPageLimit})
	if err != nil || len(list) != sessions {
		t.Fatalf("%d sessions listed (%v), want %d", len(list), err, sessions)
	}
}

// TestRevokeAllRacingWritesOfItsSessions: refreshes, sign-outs and issues of
// one user racing a revoke-all and a deactivation on another instance. Per-
// session concurrency lets a write decided before the user event land after
// it; it changes nothing, and its command says so: no refresh or issue that
// succeeded has its event after the cut-off that ended it, the auditor finds
// the stream valid, and every session issued before the deactivation ended.
func TestRevokeAllRacingWritesOfItsSessions(t *testing.T) {
	srv, clk, a := setup(t, time.Minute)
	b := newInstance(t, srv, clk, time.Minute)
	ctx := context.Background()
	const sessions = 60
	tokens := make([]string, sessions)
	for i := range tokens {
		p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = p.RefreshToken
	}
	type done struct {
		kind string
		sid  string
		gen  uint32 // of the refresh token handed out
	}
	results := make(chan done, 4*sessions)
	var wg sync.WaitGroup
	var cut, deactivation uint64
	wg.Go(func() {
		if err := b.RevokeUser(ctx, "alice"); err != nil {
			t.Error(err)
		}
		cut, _ = b.Store.LastSeq(ctx)
		if err := b.Deactivate(ctx, "alice"); err != nil {
			t.Error(err)
		}
		deactivation, _ = b.Store.LastSeq(ctx)
	})
	for i := range sessions {
		wg.Go(func() {
			p, err := a.Refresh(ctx, tokens[i])
			switch {
			case err == nil:
				results <- done{"refresh", p.SessionID, generation(t, p.RefreshToken)}
			case !errors.Is(err, domain.ErrSessionEnded) && !errors.Is(err, domain.ErrTokenUnknown):
				t.Errorf("refresh: %v", err)
			}
		})
		wg.Go(func() {
			p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
			switch {
			case err == nil:
				results <- done{"issue", p.SessionID, generation(t, p.RefreshToken)}
			case !errors.Is(err, domain.ErrUserDeactivated):
				t.Errorf("issue: %v", err)
			}
		})
	}
	wg.Wait()
	close(results)
	if cut == 0 || deactivation == 0 {
		t.Fatal("the user events did not land")
	}
	ok := 0
	for r := range results {
		ok++
		// The event that made the token handed out: the issue, or the
		// rotation to its generation. It must come before the user event
		// that ended the session: the revoke-all for the sessions issued
		// before it, the deactivation for those issued during the race.
		seq := eventFor(t, a, r.sid, r.gen)
		limit := deactivation
		if r.kind == "refresh" {
			limit = cut
		}
		if seq == 0 || seq > limit {
			t.Errorf("%s of %s answered success, but its event (at %d) is not before the user event at %d that ended the session", r.kind, r.sid, seq, limit)
		}
	}
	t.Logf("%d of %d writes succeeded; %d superseded by the user events", ok, 2*sessions, a.Proj.Superseded())
	if n := a.Proj.LiveSessions(); n != 0 {
		t.Fatalf("%d sessions live after the deactivation", n)
	}
	if a.Proj.Refused() != 0 || b.Proj.Refused() != 0 {
		t.Fatalf("the projections refused %d and %d of the ledger's own events", a.Proj.Refused(), b.Proj.Refused())
	}
	if a.Proj.Superseded() != b.Proj.Superseded() {
		t.Fatalf("the two instances disagree on what was superseded: %d and %d", a.Proj.Superseded(), b.Proj.Superseded())
	}
}

// generation returns the generation of a refresh token.
func generation(t *testing.T, raw string) uint32 {
	t.Helper()
	tok, err := domain.ParseRefreshToken(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Generation
}

// eventFor returns the stream sequence of the event of session sid that
// made its refresh token of generation gen: its issue or that rotation.
func eventFor(t *testing.T, in *ledgertest.Ledger, sid string, gen uint32) uint64 {
	t.Helper()
	events, err := in.History(context.Background(), sid)
	if err != nil {
		t.Error(err)
		return 0
	}
	for _, e := range events {
		switch d := e.Data.(type) {
		case domain.SessionIssued:
			if gen == 0 {
				return e.Seq
			}
		case domain.SessionRotated:
			if d.Generation == gen {
				return e.Seq
			}
		}
	}
	return 0
}
