package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/ledger"
)

// expiredEvent is the part of a session.expired CloudEvent the tests read.
type expiredEvent struct {
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
	Data    struct {
		Reason string `json:"reason"`
	} `json:"data"`
}

func subscribe(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil || nc.Flush() != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	return sub
}

// TestExpiryIsAnnouncedWithoutTheClient moves the ledger's clock past each
// session's deadline and requires the sweeper (every 250 ms, as
// docs/architecture.md says) to record and announce the expiry on its own,
// stamped with the clock's time, with the reason that ended the session.
func TestExpiryIsAnnouncedWithoutTheClient(t *testing.T) {
	clock := newTestClock()
	h := boot(t, "", func(c *Config) { c.Now = clock.Now })
	if h.m.Config.SweepInterval != ledger.DefaultSweepInterval || ledger.DefaultSweepInterval != 250*time.Millisecond {
		t.Fatalf("sweep interval %v, want the default 250 ms that the docs quote", h.m.Config.SweepInterval)
	}
	sub := subscribe(t, h.nats(), "ledger.*.*.expired")

	issued := clock.Now()
	idle := h.issue(`{"user_id":"alice","policy":{"access_token_ttl":1,"absolute_lifetime":30,"inactivity_timeout":1}}`)
	short := h.issue(`{"user_id":"bob","policy":{"access_token_ttl":1,"absolute_lifetime":2,"inactivity_timeout":0}}`)
	if idle.ExpiresIn != 1 {
		t.Fatalf("expires_in %v, want the policy's 1 s", idle.ExpiresIn)
	}
	// next waits for one expiry announcement and requires that it is the
	// session's, for reason, recorded at the clock's time, within a sweep
	// interval (and the time to record it) of the clock passing the deadline.
	next := func(s session, reason string, passed time.Time) {
		t.Helper()
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no expiry of %s announced: %v", s.ID, err)
		}
		late := time.Since(passed)
		var e expiredEvent
		if err := json.Unmarshal(msg.Data, &e); err != nil {
			t.Fatal(err)
		}
		if e.Subject != s.ID || e.Data.Reason != reason || !e.Time.Equal(clock.Now()) {
			t.Fatalf("expiry announced: %s, want session %s, reason %s, time %v", msg.Data, s.ID, reason, clock.Now().UTC())
		}
		if late > ledger.DefaultSweepInterval+500*time.Millisecond {
			t.Errorf("session %s: expiry announced %v after the clock passed its deadline, want a sweep interval (%v) and a write at most",
				s.ID, late, ledger.DefaultSweepInterval)
		}
		t.Logf("session %s: announced %v after the clock passed its deadline", s.ID, late.Round(time.Millisecond))
	}

	// 1.2 s on: past alice's inactivity deadline, not bob's absolute one.
	clock.Advance(1200 * time.Millisecond)
	passed := time.Now()
	short = h.mustRefresh(short.Refresh) // bob is active; only his absolute lifetime can end his session
	next(idle, "inactivity", passed)
	// 2 s after issue: exactly bob's absolute deadline.
	clock.Advance(issued.Add(2 * time.Second).Sub(clock.Now()))
	passed = time.Now()
	next(short, "absolute", passed)

	h.wantInvalidGrant(idle.Refresh)
	h.wantInvalidGrant(short.Refresh)
	for _, s := range []session{idle, short} {
		if types := h.history(s.ID); count(types, "session.expired") != 1 || types[len(types)-1] != "session.expired" {
			t.Fatalf("history of %s: %v", s.ID, types)
		}
	}
}

func TestPolicyInput(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DefaultPolicy = "high_security" })
	if s := h.issue(`{"user_id":"alice"}`); s.ExpiresIn != 300 {
		t.Fatalf("--default-policy high_security: expires_in %v, want 300", s.ExpiresIn)
	}
	if s := h.issue(`{"user_id":"alice","policy":"mobile"}`); s.ExpiresIn != 3600 {
		t.Fatalf("mobile: expires_in %v", s.ExpiresIn)
	}
	s := h.issue(`{"user_id":"carol","policy":{"access_token_ttl":120,"absolute_lifetime":7200,"inactivity_timeout":0}}`)
	carol := h.userSessions("carol")
	if len(carol) != 1 {
		t.Fatalf("carol's sessions: %v", carol)
	}
	pol := carol[0]["policy"].(map[string]any)
	if s.ExpiresIn != 120 || pol["name"] != "custom" || pol["absolute_lifetime"] != 7200.0 || pol["inactivity_timeout"] != 0.0 {
		t.Fatalf("custom policy: expires_in %v, recorded %v", s.ExpiresIn, pol)
	}
	for _, tt := range []struct{ policy, field string }{
		{`{"access_token_ttl":0,"absolute_lifetime":10,"inactivity_timeout":0}`, "policy.access_token_ttl"},
		{`{"access_token_ttl":60,"absolute_lifetime":30,"inactivity_timeout":0}`, "policy.absolute_lifetime"},
		{`{"access_token_ttl":1,"absolute_lifetime":0,"inactivity_timeout":0}`, "policy.absolute_lifetime"},
		{`{"access_token_ttl":1,"absolute_lifetime":10,"inactivity_timeout":-5}`, "policy.inactivity_timeout"},
		{`{"access_token_ttl":1.5,"absolute_lifetime":10,"inactivity_timeout":0}`, "policy.access_token_ttl"},
		{`{"access_token_ttl":"60","absolute_lifetime":10,"inactivity_timeout":0}`, "policy"},
		{`{"absolute_lifetime":10,"inactivity_timeout":0}`, "policy.access_token_ttl"},
		{`{"access_token_ttl":1,"absolute_lifetime":10}`, "policy.inactivity_timeout"},
		{`{"access_token_ttl":1,"absolute_lifetime":10,"inactivity_timeout":0,"idle":3}`, "field other than"},
		{`{"access_token_ttl":1e30,"absolute_lifetime":10,"inactivity_timeout":0}`, "policy.access_token_ttl"},
		{`{"access_token_ttl":60,"absolute_lifetime":9999999999999,"inactivity_timeout":0}`, "policy.absolute_lifetime"},
		{`"platinum"`, "policy"},
		{`[]`, "policy"},
	} {
		st, body := h.admin("POST", "/v1/sessions", `{"user_id":"dave","policy":`+tt.policy+`}`)
		if st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["detail"]), tt.field) {
			t.Errorf("policy %s: %d %v, want 400 naming %s", tt.policy, st, body, tt.field)
		}
	}
}

func TestGraceWindowOverHTTP(t *testing.T) {
	clock := newTestClock()
	h := boot(t, "", func(c *Config) { c.ReuseGrace, c.Now = time.Second, clock.Now })
	reused := subscribe(t, h.nats(), "ledger.*.*.reused")
	s0 := h.issue(`{"user_id":"alice"}`)
	s1 := h.mustRefresh(s0.Refresh)
	retry := h.mustRefresh(s0.Refresh) // a retry after a lost response
	if retry.Refresh != s1.Refresh || retry.Access == s1.Access {
		t.Fatal("a retry inside the window must get the same refresh token and a fresh access token")
	}
	wantReused := func(outcome string) {
		t.Helper()
		msg, err := reused.NextMsg(time.Second)
		if err != nil {
			t.Fatalf("no %s reuse on NATS: %v", outcome, err)
		}
		if !strings.Contains(string(msg.Data), `"outcome":"`+outcome+`"`) {
			t.Fatalf("reuse on NATS: %s, want outcome %s", msg.Data, outcome)
		}
	}
	wantReused("tolerated")
	if types := h.history(s0.ID); count(types, "session.revoked") != 0 {
		t.Fatalf("a tolerated retry revoked: %v", types)
	}
	clock.Advance(time.Second) // the window (1 s from the rotation) has passed
	h.wantInvalidGrant(s0.Refresh)
	wantReused("family_revoked")
	h.wantInvalidGrant(s1.Refresh)
	if types := h.history(s0.ID); types[len(types)-1] != "session.revoked" {
		t.Fatalf("history %v", types)
	}
}

func TestGraceWindowDisabled(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.ReuseGrace = 0 })
	s0 := h.issue(`{"user_id":"alice"}`)
	s1 := h.mustRefresh(s0.Refresh)
	h.wantInvalidGrant(s0.Refresh) // immediately: no tolerance
	h.wantInvalidGrant(s1.Refresh)
}
