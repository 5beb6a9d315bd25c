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
