package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/transmit"
)

// pollSETs polls a stream and returns its jtis (sorted), the decoded
// claims by jti, and moreAvailable.
func pollSETs(t testing.TB, h *ledgerHarness, auth http.Header, path, body string) ([]string, map[string]map[string]any, bool) {
	t.Helper()
	out := ssfDo(t, h, auth, "POST", path, body, http.StatusOK)
	sets, _ := out["sets"].(map[string]any)
	var jtis []string
	claims := map[string]map[string]any{}
	for jti, set := range sets {
		jtis = append(jtis, jti)
		_, c := verifySET(t, h, set.(string))
		claims[jti] = c
	}
	slices.Sort(jtis)
	more, _ := out["moreAvailable"].(bool)
	return jtis, claims, more
}

// TestPollStream: RFC 8936 polling in pages (maxEvents, moreAvailable),
// acknowledgements out of order, setErrs taken as acknowledgements, a
// deactivation's two SETs (session-revoked and credential-change), and a
// long poll answered as soon as an event comes.
func TestPollStream(t *testing.T) {
	h := boot(t, "", nil)
	auth := ssfReceiver(t, h, "https://poll.example")
	// Before the stream: not delivered.
	for i := range 5 {
		s := h.issue(fmt.Sprintf(`{"user_id":"p%d"}`, i))
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	}
	id := ssfDo(t, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8936"},"events_requested":["`+transmit.EventSessionRevoked+`","`+transmit.EventCredentialChange+`"]}`, http.StatusCreated)["stream_id"].(string)
	path := transmit.PollPath + id
	jtis, _, more := pollSETs(t, h, auth, path, `{"returnImmediately":true}`)
	if len(jtis) != 0 || more {
		t.Fatalf("events from before the stream were polled: %v", jtis)
	}

	var sessions []string
	for i := range 5 {
		s := h.issue(fmt.Sprintf(`{"user_id":"p%d"}`, i))
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
		sessions = append(sessions, s.ID)
	}
	h.mustAdmin("POST", "/v1/users/p9/deactivate", "", http.StatusNoContent)

	page, claims, more := pollSETs(t, h, auth, path, `{"returnImmediately":true,"maxEvents":2}`)
	if len(page) != 2 || !more {
		t.Fatalf("first page: %v more=%v, want 2 and more", page, more)
	}
	first := claims[page[0]]
	if sub := first["sub_id"].(map[string]any)["session"].(map[string]any)["id"]; sub != sessions[0] {
		t.Fatalf("the first SET is for %v, want the first session %s (stream order)", sub, sessions[0])
	}
	// The second acknowledged before the first: the first comes back.
	jtis, _, _ = pollSETs(t, h, auth, path, `{"returnImmediately":true,"maxEvents":1,"ack":["`+page[1]+`"]}`)
	if len(jtis) != 1 || jtis[0] != page[0] {
		t.Fatalf("after acknowledging the second, polled %v, want the first %s again", jtis, page[0])
	}
	// The first reported as an error: acknowledged too.
	all, claims, more := pollSETs(t, h, auth, path, `{"returnImmediately":true,"setErrs":{"`+page[0]+`":{"err":"invalid_audience","description":"x"}}}`)
	if len(all) != 5 || more {
		t.Fatalf("after both: %d SETs (more=%v), want the other 3 revocations and the deactivation's 2", len(all), more)
	}
	var kinds []string
	for _, jti := range all {
		for ev := range claims[jti]["events"].(map[string]any) {
			kinds = append(kinds, ev[strings.LastIndex(ev, "/")+1:])
		}
	}
	slices.Sort(kinds)
	if strings.Join(kinds, ",") != "credential-change,session-revoked,session-revoked,session-revoked,session-revoked" {
		t.Fatalf("event kinds %v", kinds)
	}
	ack, _ := json.Marshal(all)
	if jtis, _, _ = pollSETs(t, h, auth, path, `{"returnImmediately":true,"ack":`+string(ack)+`}`); len(jtis) != 0 {
		t.Fatalf("after acknowledging everything: %v", jtis)
	}

	// A long poll returns once an event comes, well before its wait ends.
	go func() {
		time.Sleep(500 * time.Millisecond)
		s := h.issue(`{"user_id":"late"}`)
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	}()
	start := time.Now()
	jtis, _, _ = pollSETs(t, h, auth, path, `{}`)
	if took := time.Since(start); len(jtis) != 1 || took > 4*time.Second || took < 400*time.Millisecond {
		t.Fatalf("long poll: %v after %v, want one SET after about 0.5 s", jtis, took)
	}
	// With nothing to come, a long poll waits: a client that gives up after
	// 2 s gets no answer before.
	ack, _ = json.Marshal(jtis)
	req, _ := http.NewRequest("POST", h.url+path, strings.NewReader(`{"ack":`+string(ack)+`}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth.Get("Authorization"))
	start = time.Now()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("an idle long poll answered %d after %v", resp.StatusCode, time.Since(start))
	}
	poll.For(t, 5*time.Second, func() bool { return strings.Contains(h.logs.String(), "the client went away") },
		func() string { return "the abandoned poll was not logged as the client's going away" })
	if strings.Contains(h.logs.String(), `"level":"ERROR"`) {
		t.Fatalf("a poll whose client went away was logged as an error:\n%s", grepLines(h.logs.String(), "ERROR"))
	}
}

// TestPollStreamPassesOverOtherEvents: a stream of credential-change only
// moves past the session revocations it gets no SET for, so that a long
// poll then waits instead of reading them again (and a long run of them
// can never stand between the receiver and its next SET); the
// deactivation that follows comes.
func TestPollStreamPassesOverOtherEvents(t *testing.T) {
	h := boot(t, "", nil)
	auth := ssfReceiver(t, h, "https://poll.example")
	id := ssfDo(t, h, auth, "POST", transmit.ConfigurationPath, `{"events_requested":["`+transmit.EventCredentialChange+`"]}`, http.StatusCreated)["stream_id"].(string)
	path := transmit.PollPath + id
	for i := range 10 {
		s := h.issue(fmt.Sprintf(`{"user_id":"o%d"}`, i))
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	}
	if jtis, _, _ := pollSETs(t, h, auth, path, `{"returnImmediately":true}`); len(jtis) != 0 {
		t.Fatalf("revocations made credential-change SETs: %v", jtis)
	}
	req, _ := http.NewRequest("POST", h.url+path, strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth.Get("Authorization"))
	start := time.Now()
	if resp, err := (&http.Client{Timeout: 1500 * time.Millisecond}).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a long poll with only passed-over events behind the cursor answered %d after %v: the cursor did not move", resp.StatusCode, time.Since(start))
	}
	h.mustAdmin("POST", "/v1/users/o3/deactivate", "", http.StatusNoContent)
	jtis, claims, _ := pollSETs(t, h, auth, path, `{"returnImmediately":true}`)
	if len(jtis) != 1 || claims[jtis[0]]["events"].(map[string]any)[transmit.EventCredentialChange] == nil {
		t.Fatalf("after the deactivation: %v", claims)
	}
}
