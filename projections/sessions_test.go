package projections

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/domain"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	s1 = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA"
	s2 = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"
)

func apply(t *testing.T, p *Sessions, seq uint64, session string, data domain.Payload) {
	t.Helper()
	if err := p.Apply(domain.Event{ID: "E", Seq: seq, Time: t0, SessionID: session, UserKey: "u1", Data: data}); err != nil {
		t.Fatal(err)
	}
}

func issued() domain.SessionIssued {
	return domain.SessionIssued{UserID: "alice", Policy: domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600}}
}

func TestCutOffEndsOnlyEarlierSessionsAndPrunes(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 1, s1, issued())
	apply(t, p, 2, "", domain.UserSessionsRevoked{UserID: "alice"})
	apply(t, p, 3, s2, issued())
	if _, ok := p.Session(s1); ok {
		t.Fatal("session issued before the cut-off is still held")
	}
	if s, ok := p.Session(s2); !ok || !s.Live() {
		t.Fatal("session issued after the cut-off was ended")
	}
	if u, ok := p.User("u1"); !ok || u.LastSeq != 3 || u.ID != "alice" {
		t.Fatalf("user %+v", u)
	}
	apply(t, p, 4, s2, domain.SessionRevoked{Reason: "x"})
	if p.LiveSessions() != 0 {
		t.Fatal("revoked session still held")
	}
	if _, ok := p.User("u1"); ok {
		t.Fatal("a user with no sessions and not deactivated is still held")
	}
}

func TestApplyIgnoresSequencesAlreadyApplied(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 5, s1, issued())
	apply(t, p, 5, s1, domain.SessionRevoked{Reason: "replayed"})
	apply(t, p, 3, s1, domain.SessionRevoked{Reason: "older"})
	if s, ok := p.Session(s1); !ok || !s.Live() {
		t.Fatal("an event at or below the applied sequence changed state")
	}
	if p.Applied() != 5 {
		t.Fatalf("applied %d", p.Applied())
	}
}

func TestDeactivatedUserIsKept(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 1, s1, issued())
	apply(t, p, 2, "", domain.UserDeactivated{UserID: "alice"})
	u, ok := p.User("u1")
	if !ok || !u.Deactivated || p.LiveSessions() != 0 {
		t.Fatalf("after deactivation: user %+v held=%v live=%d", u, ok, p.LiveSessions())
	}
	apply(t, p, 3, "", domain.UserReactivated{UserID: "alice"})
	if _, ok := p.User("u1"); ok {
		t.Fatal("reactivated user without sessions still held")
	}
}

func TestReuseRevocationStaysUntilAnnounced(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 1, s1, issued())
	apply(t, p, 2, s1, domain.SessionReused{Outcome: domain.ReuseFamilyRevoked})
	if got := p.PendingRevocations(); len(got) != 1 || got[0].ID != s1 {
		t.Fatalf("pending %v", got)
	}
	if len(p.UserSessions("u1")) != 0 {
		t.Fatal("a reuse-revoked session is listed as live")
	}
	apply(t, p, 3, s1, domain.SessionRevoked{Reason: domain.ReasonReuseDetected})
	if len(p.PendingRevocations()) != 0 || p.LiveSessions() != 0 {
		t.Fatal("session still held after its revocation was recorded")
	}
}

func TestWaitApplied(t *testing.T) {
	p := NewSessions(nil)
	done := make(chan error)
	go func() { done <- p.WaitApplied(context.Background(), 2) }()
	apply(t, p, 1, s1, issued())
	select {
	case <-done:
		t.Fatal("returned before sequence 2 was applied")
	case <-time.After(20 * time.Millisecond):
	}
	apply(t, p, 2, s1, domain.SessionRevoked{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := p.WaitApplied(ctx, 9); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("timeout: %v", err)
	}
	go func() { done <- p.WaitApplied(context.Background(), 9) }()
	time.Sleep(10 * time.Millisecond)
	p.Fail(errors.New("broken"))
	if err := <-done; !errors.Is(err, domain.ErrProjectionFailed) {
		t.Fatalf("after Fail: %v", err)
	}
}

func TestDueFollowsDeadlines(t *testing.T) {
	p := NewSessions(nil)
	pol := func(inactivity domain.Seconds) domain.SessionIssued {
		return domain.SessionIssued{UserID: "alice", Policy: domain.Policy{AccessTokenTTL: 1, AbsoluteLifetime: 1000, InactivityTimeout: inactivity}}
	}
	ids := []string{"01JD3Z9V6Q4Q4WJ5X7K8M9N0P1", "01JD3Z9V6Q4Q4WJ5X7K8M9N0P2", "01JD3Z9V6Q4Q4WJ5X7K8M9N0P3", "01JD3Z9V6Q4Q4WJ5X7K8M9N0P4"}
	apply(t, p, 1, ids[0], pol(30))
	apply(t, p, 2, ids[1], pol(10))
	apply(t, p, 3, ids[2], pol(20))
	apply(t, p, 4, ids[3], pol(0)) // absolute only: 1000 s
	due := func(at time.Duration, limit int) []string {
		var out []string
		for _, s := range p.Due(t0.Add(at), limit) {
			out = append(out, s.ID)
		}
		return out
	}
	if got := due(9*time.Second, 10); len(got) != 0 {
		t.Fatalf("due at 9s: %v", got)
	}
	if got := due(20*time.Second, 10); len(got) != 2 || got[0] != ids[1] || got[1] != ids[2] {
		t.Fatalf("due at 20s: %v, want [%s %s]", got, ids[1], ids[2])
	}
	if got := due(time.Hour, 2); len(got) != 2 {
		t.Fatalf("limit not honoured: %v", got)
	}
	// A rotation at 15 s moves session 2's inactivity deadline to 25 s.
	if err := p.Apply(domain.Event{Seq: 5, Time: t0.Add(15 * time.Second), SessionID: ids[1], UserKey: "u1",
		Data: domain.SessionRotated{Generation: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := due(20*time.Second, 10); len(got) != 1 || got[0] != ids[2] {
		t.Fatalf("due at 20s after the rotation: %v", got)
	}
	apply(t, p, 6, ids[2], domain.SessionExpired{Reason: domain.ExpiredInactivity})
	if got := due(999*time.Second, 10); len(got) != 2 || got[0] != ids[1] || got[1] != ids[0] {
		t.Fatalf("due at 999s: %v", got)
	}
	if got := due(1000*time.Second, 10); len(got) != 3 || got[2] != ids[3] {
		t.Fatalf("due at 1000s: %v", got)
	}
}
