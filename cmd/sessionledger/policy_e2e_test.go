package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats.go"
)

// expiredEvent is the part of a session.expired CloudEvent the tests read.
type expiredEvent struct {
	Subject string `json:"subject"`
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

func TestExpiryIsAnnouncedWithoutTheClient(t *testing.T) {
	h := boot(t, "", nil)
	sub := subscribe(t, h.nats(), "ledger.*.*.expired")

	before := time.Now()
	idle := h.issue(`{"user_id":"alice","policy":{"access_token_ttl":1,"absolute_lifetime":30,"inactivity_timeout":1}}`)
	short := h.issue(`{"user_id":"bob","policy":{"access_token_ttl":1,"absolute_lifetime":2,"inactivity_timeout":0}}`)
	if idle.ExpiresIn != 1 {
		t.Fatalf("expires_in %v, want the policy's 1 s", idle.ExpiresIn)
	}
	// Keep bob active: only the absolute lifetime can end his session.
	time.Sleep(1200 * time.Millisecond)
	short = h.mustRefresh(short.Refresh)

	got := map[string]string{}
	lateness := map[string]time.Duration{}
	deadlines := map[string]time.Time{idle.ID: before.Add(time.Second), short.ID: before.Add(2 * time.Second)}
	for len(got) < 2 {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("expiries seen %v: %v", got, err)
		}
		var e expiredEvent
		if err := json.Unmarshal(msg.Data, &e); err != nil {
			t.Fatal(err)
		}
		got[e.Subject] = e.Data.Reason
		lateness[e.Subject] = time.Since(deadlines[e.Subject])
	}
	if got[idle.ID] != "inactivity" || got[short.ID] != "absolute" {
		t.Fatalf("expiry reasons %v", got)
	}
	for id, late := range lateness {
		if late > 1500*time.Millisecond {
			t.Errorf("session %s: expiry announced %v after its deadline, want about a second at most", id, late)
		}
		t.Logf("session %s: announced %v after its deadline", id, late.Round(time.Millisecond))
	}
	h.wantInvalidGrant(idle.Refresh)
	h.wantInvalidGrant(short.Refresh)
	if types := h.history(idle.ID); count(types, "session.expired") != 1 {
		t.Fatalf("history %v", types)
	}
}

func TestTwoInstancesRecordEachExpiryOnce(t *testing.T) {
	dir := t.TempDir()
	a := boot(t, dir, nil)
	b := boot(t, dir, func(c *Config) { c.NATSURL = a.m.NATSURL() }) // same keys, same NATS, own projection
	var ids []string
	for i := 0; i < 12; i++ {
		h := a
		if i%2 == 1 {
			h = b
		}
		s := h.issue(fmt.Sprintf(`{"user_id":"user-%d","policy":{"access_token_ttl":1,"absolute_lifetime":60,"inactivity_timeout":1}}`, i%4))
		ids = append(ids, s.ID)
	}
	poll.For(t, 10*time.Second, func() bool { return count(a.eventTypes(), "session.expired") >= len(ids) },
		func() string { return fmt.Sprintf("expiries: %v", a.eventTypes()) })
	time.Sleep(600 * time.Millisecond) // give a duplicate the time to appear
	if n := count(a.eventTypes(), "session.expired"); n != len(ids) {
		t.Fatalf("%d expiry events for %d sessions with two instances sweeping", n, len(ids))
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
	_, body := h.admin("GET", "/v1/users/carol/sessions", "")
	pol := body["sessions"].([]any)[0].(map[string]any)["policy"].(map[string]any)
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
		{`{"access_token_ttl":1,"absolute_lifetime":10,"inactivity_timeout":0,"idle":3}`, "policy.idle"},
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
	h := boot(t, "", func(c *Config) { c.ReuseGrace = time.Second })
	reused := subscribe(t, h.nats(), "ledger.*.*.reused")
	s0 := h.issue(`{"user_id":"alice"}`)
	s1 := h.mustRefresh(s0.Refresh)
	retry := h.mustRefresh(s0.Refresh) // a retry after a lost response
	if retry.Refresh != s1.Refresh || retry.Access == s1.Access {
		t.Fatal("a retry inside the window must get the same refresh token and a fresh access token")
	}
	msg, err := reused.NextMsg(time.Second)
	if err != nil || !strings.Contains(string(msg.Data), `"outcome":"tolerated"`) {
		t.Fatalf("tolerated reuse on NATS: %v %s", err, msg.Data)
	}
	if types := h.history(s0.ID); count(types, "session.revoked") != 0 {
		t.Fatalf("a tolerated retry revoked: %v", types)
	}
	time.Sleep(1100 * time.Millisecond)
	h.wantInvalidGrant(s0.Refresh) // the window has passed: reuse
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
