package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/natstest"
)

// auditRun runs "sessionledger audit args..." and returns stdout and the error.
func auditRun(t *testing.T, natsURL string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"audit"}, args...)
	args = append(args, "--nats-url", natsURL)
	err := run(context.Background(), args, &out, &errOut)
	if !strings.Contains(errOut.String(), "replayed ") {
		t.Fatalf("audit %v did not report its replay rate; stderr:\n%s", args, errOut.String())
	}
	return out.String(), err
}

// knownHistory builds a ledger with a history whose answers are known, and
// returns it with the instants between its steps. The ledger runs on a test
// clock, so events stamped before a step's instant are strictly earlier and
// those after strictly later.
func knownHistory(t *testing.T) (*ledgerHarness, map[string]session, map[string]time.Time) {
	clock := newTestClock()
	h := boot(t, "", func(c *Config) { c.Now = clock.Now })
	s := map[string]session{}
	at := map[string]time.Time{}
	step := func(name string) {
		at[name] = clock.Advance(20 * time.Millisecond)
		clock.Advance(20 * time.Millisecond)
	}
	s["alice"] = h.issue(`{"user_id":"alice","device":{"name":"laptop","ip":"203.0.113.7","user_agent":"Firefox"}}`)
	s["bob"] = h.issue(`{"user_id":"bob","device":{"name":"phone"}}`)
	step("two live")
	a1 := h.mustRefresh(s["alice"].Refresh)
	h.mustRefresh(a1.Refresh)
	h.wantInvalidGrant(s["alice"].Refresh) // reuse: alice's session is revoked
	s["carol1"] = h.issue(`{"user_id":"carol"}`)
	s["carol2"] = h.issue(`{"user_id":"carol"}`)
	step("bob and two of carol")
	h.mustAdmin("DELETE", "/v1/users/carol/sessions", "", http.StatusNoContent)
	h.mustAdmin("DELETE", "/v1/sessions/"+s["bob"].ID, "", http.StatusNoContent)
	s["dave"] = h.issue(`{"user_id":"dave"}`)
	h.mustForm("/oauth2/revoke", url.Values{"token": {s["dave"].Refresh}}, nil, http.StatusOK)
	step("none")
	return h, s, at
}

func TestAuditOnAKnownHistory(t *testing.T) {
	h, s, at := knownHistory(t)
	natsURL := h.m.NATSURL()

	out, err := auditRun(t, natsURL, "verify")
	if err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("verify of an untouched stream: %v\n%s", err, out)
	}

	out, err = auditRun(t, natsURL, "history", "--session", s["alice"].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"session.issued", "user alice, client default, policy consumer, from laptop, Firefox, 203.0.113.7",
		"session.rotated", "generation 1", "generation 2", "session.reused", "family_revoked", "session.revoked", "reason reuse_detected, by ledger"} {
		if !strings.Contains(out, want) {
			t.Fatalf("alice's timeline lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "\n"); lines != 1+5 {
		t.Fatalf("alice's timeline has %d rows, want 5:\n%s", lines-1, out)
	}

	out, err = auditRun(t, natsURL, "history", "--user", "carol", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Seq   uint64 `json:"seq"`
			Event struct {
				Type string `json:"type"`
			} `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Seq == 0 {
			t.Fatalf("history --json line %q: %v", line, err)
		}
		types = append(types, rec.Event.Type)
	}
	if strings.Join(types, " ") != "session.issued session.issued user.sessions_revoked" {
		t.Fatalf("carol's history: %v", types)
	}
	out, err = auditRun(t, natsURL, "history", "--session", s["carol1"].ID)
	if err != nil || !strings.Contains(out, "user.sessions_revoked") {
		t.Fatalf("a session ended by revoke-all shows no cut-off: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		step string
		want string
	}{
		{"two live", "2 live sessions of 2 users (2 issued by then)"},
		{"bob and two of carol", "3 live sessions of 2 users (4 issued by then)"},
		{"none", "0 live sessions of 0 users (5 issued by then)"},
	} {
		out, err := auditRun(t, natsURL, "at", "--time", at[tc.step].Format(time.RFC3339Nano))
		if err != nil || !strings.Contains(out, tc.want) {
			t.Fatalf("at %q: %v\n%s, want %q", tc.step, err, out, tc.want)
		}
	}
	out, err = auditRun(t, natsURL, "at", "--time", at["bob and two of carol"].Format(time.RFC3339Nano), "--user", "carol")
	if err != nil || !strings.Contains(out, s["carol1"].ID) || !strings.Contains(out, s["carol2"].ID) || !strings.Contains(out, "user carol had 2 live sessions") {
		t.Fatalf("carol at that time: %v\n%s", err, out)
	}

	out, err = auditRun(t, natsURL, "export")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if uint64(len(lines)) != h.lastSeq() {
		t.Fatalf("export wrote %d events, the stream holds %d", len(lines), h.lastSeq())
	}
	for _, l := range lines {
		var ce map[string]any
		if err := json.Unmarshal([]byte(l), &ce); err != nil || ce["specversion"] != "1.0" || ce["id"] == nil || ce["expectseq"] == nil || ce["prevdigest"] != nil {
			t.Fatalf("export line is not a CloudEvent of the ledger: %s", l)
		}
	}
	out, err = auditRun(t, natsURL, "export", "--session", s["bob"].ID)
	if n := strings.Count(out, "\n"); err != nil || n != 2 {
		t.Fatalf("export of bob's session: %d events, want 2: %v", n, err)
	}
	out, err = auditRun(t, natsURL, "export", "--since", at["bob and two of carol"].Format(time.RFC3339Nano), "--until", at["none"].Format(time.RFC3339Nano))
	if n := strings.Count(out, "\n"); err != nil || n != 4 {
		t.Fatalf("export of a time range: %d events, want 4 (revoke-all, revoke, issue, sign-out): %v\n%s", n, err, out)
	}
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"audit", "at", "--time", "yesterday", "--nats-url", natsURL}, &stderr, &stderr); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Fatalf("a bad --time: %v", err)
	}
}

// message is one stored message of a stream.
type message struct {
	subject string
	data    []byte
}

// copyStream publishes msgs, in order, into a fresh stream LEDGER on a new
// server, and returns that server's URL.
func copyStream(t *testing.T, msgs []message) string {
	t.Helper()
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	if _, err := eventstore.Open(context.Background(), nc, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := js.Publish(context.Background(), m.subject, m.data); err != nil {
			t.Fatal(err)
		}
	}
	return srv.ClientURL()
}

// withoutMsg is msgs without message i.
func withoutMsg(msgs []message, i int) []message {
	return append(append([]message(nil), msgs[:i]...), msgs[i+1:]...)
}

// swappedMsgs is msgs with messages i and j in each other's place.
func swappedMsgs(msgs []message, i, j int) []message {
	c := append([]message(nil), msgs...)
	c[i], c[j] = c[j], c[i]
	return c
}

// editedMsg is msgs with the first from in message i replaced by to.
func editedMsg(t *testing.T, msgs []message, i int, from, to string) []message {
	t.Helper()
	c := append([]message(nil), msgs...)
	if !bytes.Contains(c[i].data, []byte(from)) {
		t.Fatalf("message %d has no %q", i, from)
	}
	c[i].data = bytes.Replace(c[i].data, []byte(from), []byte(to), 1)
	return c
}

func TestAuditVerifyNamesTheDamage(t *testing.T) {
	h, s, _ := knownHistory(t)
	nc, err := nats.Connect(h.m.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	feed, err := eventstore.NewFeed(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []message
	var events []domain.Event
	if err := feed.Replay(context.Background(), nil, time.Time{}, nil, func(seq uint64, subject string, data []byte) error {
		msgs = append(msgs, message{subject, append([]byte(nil), data...)})
		e, _ := domain.DecodeEvent(data)
		events = append(events, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Find alice's events: issued, rotated, rotated, reused, revoked.
	var alice []int
	for i, e := range events {
		if e.SessionID == s["alice"].ID {
			alice = append(alice, i)
		}
	}
	if len(alice) != 5 {
		t.Fatalf("alice has %d events", len(alice))
	}
	seq := func(i int) uint64 { return uint64(i + 1) }
	without := func(i int) []message { return withoutMsg(msgs, i) }
	swapped := func(i, j int) []message { return swappedMsgs(msgs, i, j) }
	edited := func(i int, from, to string) []message { return editedMsg(t, msgs, i, from, to) }
	for _, tc := range []struct {
		name    string
		msgs    []message
		kind    string
		seq     uint64 // where verify must report it
		mention string
	}{
		{"a rotation removed", without(alice[1]), "position", seq(alice[2] - 1), "removed or reordered"},
		{"two events of a session reordered", swapped(alice[1], alice[2]), "position", seq(alice[1]), fmt.Sprintf("follows sequence %d", seq(alice[0]))},
		{"an event edited", edited(alice[1], `"generation":1`, `"generation":7`), "transition", seq(alice[1]), "generation 7"},
		{"an event replaced by garbage", edited(alice[2], `"specversion":"1.0"`, `"specversion":"9"`), "undecodable", seq(alice[2]), "specversion"},
		// What keeps each session's and user's order and a valid history (a
		// reason edited, a cut-off moved among other sessions' events) is
		// for the signed checkpoints to tell: TestAuditVerifyWithCheckpoints.
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := auditRun(t, copyStream(t, tc.msgs), "verify", "--json")
			if !errors.Is(err, errIntegrity) {
				t.Fatalf("verify did not fail: %v\n%s", err, out)
			}
			var found bool
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var p struct {
					Seq    uint64 `json:"seq"`
					Kind   string `json:"kind"`
					Detail string `json:"detail"`
				}
				_ = json.Unmarshal([]byte(line), &p)
				if p.Seq == tc.seq && p.Kind == tc.kind && strings.Contains(p.Detail, tc.mention) {
					found = true
				}
			}
			if !found {
				t.Fatalf("verify did not report %s at seq %d:\n%s", tc.kind, tc.seq, out)
			}
		})
	}
	// And an untouched copy verifies.
	if out, err := auditRun(t, copyStream(t, msgs), "verify"); err != nil {
		t.Fatalf("an exact copy fails: %v\n%s", err, out)
	}
}

// TestAuditTimelineAndHistoryEndpointAgree: the auditors' timeline of a
// session ended by a deactivation ends there, as the history endpoint does;
// the user's later reactivation and revoke-all are not the session's.
func TestAuditTimelineAndHistoryEndpointAgree(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"erin"}`)
	h.mustRefresh(s.Refresh)
	for _, step := range []struct{ method, path string }{
		{"POST", "/v1/users/erin/deactivate"},
		{"POST", "/v1/users/erin/reactivate"},
		{"DELETE", "/v1/users/erin/sessions"},
	} {
		h.mustAdmin(step.method, step.path, "", http.StatusNoContent)
	}
	out, err := auditRun(t, h.m.NATSURL(), "history", "--session", s.ID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var timeline []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Event struct {
				Type string `json:"type"`
			} `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("history --json line %q: %v", line, err)
		}
		timeline = append(timeline, rec.Event.Type)
	}
	want := "session.issued session.rotated user.deactivated"
	if got := strings.Join(timeline, " "); got != want {
		t.Errorf("audit timeline %q, want %q", got, want)
	}
	if got := strings.Join(h.history(s.ID), " "); got != want {
		t.Errorf("history endpoint %q, want %q", got, want)
	}
}
