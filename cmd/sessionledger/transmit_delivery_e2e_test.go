package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/transmit"
)

// hookServer is a webhook receiver that answers with status (and waits
// delay first), and records every request, answered 2xx or not.
type hookServer struct {
	*httptest.Server
	status atomic.Int64
	delay  atomic.Int64 // nanoseconds
	mu     sync.Mutex
	reqs   []hookRequest
}

type hookRequest struct {
	ID, Signature string
	Body          []byte
	Header        http.Header
	Status        int
	At            time.Time
}

func newHookServer(t testing.TB) *hookServer {
	t.Helper()
	s := &hookServer{}
	s.status.Store(http.StatusNoContent)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if d := time.Duration(s.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		status := int(s.status.Load())
		s.mu.Lock()
		s.reqs = append(s.reqs, hookRequest{ID: r.Header.Get("webhook-id"), Signature: r.Header.Get("webhook-signature"), Body: body, Header: r.Header.Clone(), Status: status, At: time.Now()})
		s.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(s.Close)
	return s
}

// delivered returns the requests answered 2xx, in arrival order.
func (s *hookServer) delivered() []hookRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []hookRequest
	for _, r := range s.reqs {
		if r.Status < 300 {
			out = append(out, r)
		}
	}
	return out
}

func (s *hookServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// waitDistinct waits until n distinct webhook-ids were answered 2xx.
func (s *hookServer) waitDistinct(t testing.TB, n int, within time.Duration) []hookRequest {
	t.Helper()
	var got []hookRequest
	poll.For(t, within, func() bool {
		got = s.delivered()
		return len(distinctIDs(got)) >= n
	}, func() string { return fmt.Sprintf("%d of %d events delivered", len(distinctIDs(got)), n) })
	return got
}

func distinctIDs(rs []hookRequest) []string {
	var out []string
	for _, r := range rs {
		if !slices.Contains(out, r.ID) {
			out = append(out, r.ID)
		}
	}
	return out
}

// webhookSequences returns data.sequence of each request, in order.
func webhookSequences(t testing.TB, rs []hookRequest) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range rs {
		var body struct {
			Data struct {
				Sequence uint64 `json:"sequence"`
			} `json:"data"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("webhook body %q: %v", r.Body, err)
		}
		out = append(out, body.Data.Sequence)
	}
	return out
}

// checkOnceInOrder fails unless rs holds want distinct events, in strictly
// increasing stream order, with at most dups requests repeated.
func checkOnceInOrder(t testing.TB, rs []hookRequest, want, dups int) {
	t.Helper()
	ids := distinctIDs(rs)
	if len(ids) != want {
		t.Fatalf("%d distinct events delivered, want %d", len(ids), want)
	}
	if extra := len(rs) - len(ids); extra > dups {
		t.Fatalf("%d events were delivered twice, want at most %d", extra, dups)
	}
	seqs := webhookSequences(t, rs)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] < seqs[i-1] || (seqs[i] == seqs[i-1] && rs[i].ID != rs[i-1].ID) {
			t.Fatalf("delivered out of stream order: sequences %v", seqs)
		}
	}
}

// makeWebhook creates a webhook of session.revoked events to url and
// returns its id and signing key.
func makeWebhook(t testing.TB, h *ledgerHarness, url string) (string, []byte) {
	t.Helper()
	w := h.mustAdmin("POST", "/v1/webhooks", `{"url":"`+url+`","events":["session.revoked"]}`, http.StatusCreated)
	key, err := transmit.ParseWebhookSecret(w["secret"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return w["id"].(string), key
}

// revokeN issues and revokes n sessions on the instances in turn.
func revokeN(t testing.TB, n int, hs ...*ledgerHarness) {
	t.Helper()
	for i := range n {
		h := hs[i%len(hs)]
		s := h.issue(fmt.Sprintf(`{"user_id":"u%d"}`, i))
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	}
}

// TestWebhookReceiverDownThenBack: a receiver that answers 503 for a while
// gets, once it answers again, every event of the meantime, each once, in
// stream order, within the backoff's cap, each verifying.
func TestWebhookReceiverDownThenBack(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	rcv.status.Store(http.StatusServiceUnavailable)
	_, key := makeWebhook(t, h, rcv.URL)
	revokeN(t, 20, h)
	poll.For(t, 10*time.Second, func() bool { return rcv.count() >= 3 }, func() string { return "no attempts while the receiver is down" })
	time.Sleep(3 * time.Second) // down for a while: the backoff grows
	back := time.Now()
	rcv.status.Store(http.StatusNoContent)
	got := rcv.waitDistinct(t, 20, 40*time.Second)
	t.Logf("%d attempts in all; the 20 events arrived %v after the receiver came back",
		rcv.count(), got[len(got)-1].At.Sub(back).Round(time.Millisecond))
	checkOnceInOrder(t, got, 20, 0)
	for _, r := range got {
		if err := transmit.VerifyWebhook(key, r.Header, r.Body, time.Now(), 5*time.Minute); err != nil {
			t.Fatalf("webhook %s: %v", r.ID, err)
		}
	}
}

// TestDeliveryResumesAfterRestart: a ledger shut down while it delivers a
// backlog to a slow receiver delivers the rest after it starts again on the
// same data dir; nothing is lost and nothing sent twice (the message in
// flight is handed back, not acknowledged).
func TestDeliveryResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	rcv.delay.Store(int64(100 * time.Millisecond))
	makeWebhook(t, h, rcv.URL)
	revokeN(t, 30, h)
	poll.For(t, 20*time.Second, func() bool { return len(rcv.delivered()) >= 5 }, func() string { return "deliveries did not start" })
	h.close()
	before := len(rcv.delivered())
	if before >= 30 {
		t.Fatal("everything was delivered before the shutdown: make the receiver slower")
	}
	h = boot(t, dir, func(c *Config) { c.DeliveryAllowLoopback = true })
	got := rcv.waitDistinct(t, 30, 30*time.Second)
	t.Logf("%d delivered before the restart, %d requests in all", before, len(got))
	checkOnceInOrder(t, got, 30, 1)
}

// TestDeliveryAfterSIGKILL: a ledger killed (no shutdown code at all) while
// it delivers loses nothing: started again on the same data dir, it
// delivers the rest, the message in flight again at most.
func TestDeliveryAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	rcv := newHookServer(t)
	rcv.delay.Store(int64(100 * time.Millisecond))
	env := []string{"SESSIONLEDGER_ADMIN_TOKEN=" + testAdminToken, "SESSIONLEDGER_DELIVERY_ALLOW_LOOPBACK=true"}
	p := startProcess(t, dir, env...)
	h := p.harness(t)
	makeWebhook(t, h, rcv.URL)
	revokeN(t, 30, h)
	poll.For(t, 20*time.Second, func() bool { return len(rcv.delivered()) >= 5 }, func() string { return "deliveries did not start" })
	p.kill9(t)
	before := len(rcv.delivered())
	if before >= 30 {
		t.Fatal("everything was delivered before the kill: make the receiver slower")
	}
	p = startProcess(t, dir, env...)
	// The message the killed process held comes back after the consumer's
	// ack wait; the others follow it.
	got := rcv.waitDistinct(t, 30, eventstore.DeliveryAckWait+30*time.Second)
	t.Logf("%d delivered before the kill, %d requests in all", before, len(got))
	checkOnceInOrder(t, got, 30, 1)
	if strings.Contains(p.logs.String(), "whsec_") {
		t.Fatal("a webhook secret is in the log")
	}
}

// TestDeliveryAcrossInstances: two instances deliver one webhook's events
// between them, each event once and in order, and when one stops the other
// delivers the rest.
func TestDeliveryAcrossInstances(t *testing.T) {
	_, hs, _ := bootClusterWith(t, 2, func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	makeWebhook(t, hs[0], rcv.URL)
	revokeN(t, 20, hs...)
	got := rcv.waitDistinct(t, 20, 20*time.Second)
	checkOnceInOrder(t, got, 20, 0)

	rcv.delay.Store(int64(50 * time.Millisecond))
	revokeN(t, 20, hs[1])
	poll.For(t, 20*time.Second, func() bool { return len(rcv.delivered()) >= 25 }, func() string { return "deliveries did not go on" })
	hs[0].close()
	got = rcv.waitDistinct(t, 40, 30*time.Second)
	checkOnceInOrder(t, got, 40, 1)
}

// TestDeliveryFailureRecordedAndReplayed: an event a receiver keeps
// refusing past --delivery-retry-for is recorded, does not hold back the
// events after it, and is delivered by a replay; the failure names no URL
// path or query (where credentials may be).
func TestDeliveryFailureRecordedAndReplayed(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback, c.DeliveryRetryFor = true, 2*time.Second })
	rcv := newHookServer(t)
	rcv.status.Store(http.StatusInternalServerError)
	id, _ := makeWebhook(t, h, rcv.URL+"/hooks/SECRETPATH?token=SECRETQUERY")
	revokeN(t, 1, h)
	var failures []any
	poll.For(t, 20*time.Second, func() bool {
		failures, _ = h.mustAdmin("GET", "/v1/deliveries/"+id+"/failures", "", http.StatusOK)["failures"].([]any)
		return len(failures) == 1
	}, func() string { return fmt.Sprintf("failures: %v", failures) })
	f := failures[0].(map[string]any)
	if f["event_type"] != "session.revoked" || f["attempts"].(float64) < 2 || f["sequence"].(float64) < 1 || !strings.Contains(f["error"].(string), "HTTP 500") {
		t.Fatalf("failure %v", f)
	}
	b, _ := json.Marshal(failures)
	for _, secret := range []string{"SECRETPATH", "SECRETQUERY"} {
		if strings.Contains(string(b), secret) || strings.Contains(h.logs.String(), secret) {
			t.Fatalf("the URL's %s is in the failure or the log", secret)
		}
	}
	// The next event is not held back by the failed one.
	rcv.status.Store(http.StatusOK)
	revokeN(t, 1, h)
	rcv.waitDistinct(t, 1, 10*time.Second)
	replay := h.mustAdmin("POST", "/v1/deliveries/"+id+"/failures/replay", "", http.StatusOK)
	if replay["delivered"] != 1.0 {
		t.Fatalf("replay: %v", replay)
	}
	got := rcv.delivered()
	if len(distinctIDs(got)) != 2 {
		t.Fatalf("after the replay %d distinct events were delivered, want 2", len(distinctIDs(got)))
	}
	if left, _ := h.mustAdmin("GET", "/v1/deliveries/"+id+"/failures", "", http.StatusOK)["failures"].([]any); len(left) != 0 {
		t.Fatalf("failures left after the replay: %v", left)
	}
	eps, _ := h.mustAdmin("GET", "/v1/deliveries", "", http.StatusOK)["endpoints"].([]any)
	if len(eps) != 1 || eps[0].(map[string]any)["pending"] != 0.0 || eps[0].(map[string]any)["failures"] != 0.0 {
		t.Fatalf("deliveries: %v", eps)
	}
	metrics := h.raw("GET", "/metrics", "", "", adminHeader).body
	for _, want := range []string{
		`sessionledger_delivery_failures_total{endpoint="` + id + `",kind="webhook"} 1`,
		`sessionledger_delivery_lag_events{endpoint="` + id + `",kind="webhook"} 0`,
		`sessionledger_delivery_latency_seconds_count{endpoint="` + id + `",kind="webhook"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, grepLines(metrics, "delivery"))
		}
	}
}

// TestSSFPushRefusedIsNotRetried: a push receiver that answers 400 with an
// RFC 8935 error refuses that SET for good: it is recorded at once, with
// the receiver's error code, and not sent again.
func TestSSFPushRefusedIsNotRetried(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	rcv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rcv.mu.Lock()
		rcv.reqs = append(rcv.reqs, hookRequest{Status: 400, At: time.Now()})
		rcv.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"err":"invalid_audience","description":"not for us"}`))
	})
	auth := ssfReceiver(t, h, "https://rp.example")
	id := ssfDo(t, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rcv.URL+`"}}`, http.StatusCreated)["stream_id"].(string)
	revokeN(t, 1, h)
	var failures []any
	poll.For(t, 10*time.Second, func() bool {
		failures, _ = h.mustAdmin("GET", "/v1/deliveries/"+id+"/failures", "", http.StatusOK)["failures"].([]any)
		return len(failures) == 1
	}, func() string { return "the refused SET was not recorded" })
	f := failures[0].(map[string]any)
	if f["attempts"] != 1.0 || !strings.Contains(f["error"].(string), `HTTP 400 ("invalid_audience")`) {
		t.Fatalf("failure %v", f)
	}
	time.Sleep(1500 * time.Millisecond) // past the first backoff
	if n := rcv.count(); n != 1 {
		t.Fatalf("the refused SET was sent %d times", n)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ssfReceiver registers a receiver and returns its Authorization header.
func ssfReceiver(t testing.TB, h *ledgerHarness, aud string) http.Header {
	t.Helper()
	r := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"r","audience":"`+aud+`"}`, http.StatusCreated)
	return http.Header{"Authorization": {"Bearer " + r["token"].(string)}}
}

// ssfDo sends a receiver's request and fails unless it answers want.
func ssfDo(t testing.TB, h *ledgerHarness, auth http.Header, method, path, body string, want int) map[string]any {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	st, out := h.do(method, path, ct, body, auth)
	if st != want {
		t.Fatalf("%s %s: %d %v, want %d", method, path, st, out, want)
	}
	return out
}

// setEvents returns the session ids of the session-revoked SETs pushed.
func pushedSessions(t testing.TB, h *ledgerHarness, rs []hookRequest) []string {
	t.Helper()
	var out []string
	for _, r := range rs {
		_, claims := verifySET(t, h, string(r.Body))
		sub, _ := claims["sub_id"].(map[string]any)
		if s, ok := sub["session"].(map[string]any); ok {
			out = append(out, s["id"].(string))
		}
	}
	return out
}

// TestStreamPauseHoldsAndDisableSkips: a paused push stream's events wait
// and arrive, in order, once it is enabled; a disabled one's are passed
// over.
func TestStreamPauseHoldsAndDisableSkips(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	auth := ssfReceiver(t, h, "https://rp.example")
	st := ssfDo(t, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rcv.URL+`"}}`, http.StatusCreated)
	id := st["stream_id"].(string)
	status := func(s string) {
		t.Helper()
		ssfDo(t, h, auth, "POST", transmit.StatusPath, `{"stream_id":"`+id+`","status":"`+s+`","reason":"test"}`, http.StatusOK)
		if got := ssfDo(t, h, auth, "GET", transmit.StatusPath+"?stream_id="+id, "", http.StatusOK); got["status"] != s {
			t.Fatalf("status %v, want %s", got, s)
		}
	}
	revoke := func(n int) []string {
		var ids []string
		for i := range n {
			s := h.issue(fmt.Sprintf(`{"user_id":"p%d"}`, i))
			h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
			ids = append(ids, s.ID)
		}
		return ids
	}
	status("paused")
	held := revoke(3)
	time.Sleep(2 * time.Second)
	if n := rcv.count(); n != 0 {
		t.Fatalf("a paused stream was sent %d SETs", n)
	}
	status("enabled")
	var got []hookRequest
	poll.For(t, 10*time.Second, func() bool { got = rcv.delivered(); return len(got) >= 3 }, func() string { return "the held events did not all come" })
	if s := pushedSessions(t, h, got); !slices.Equal(s, held) {
		t.Fatalf("after enabling, the SETs were for %v, want the held %v in order", s, held)
	}
	status("disabled")
	revoke(2)
	time.Sleep(time.Second)
	status("enabled")
	after := revoke(1)
	poll.For(t, 10*time.Second, func() bool { return len(rcv.delivered()) >= 4 }, func() string { return "no SET after re-enabling" })
	time.Sleep(500 * time.Millisecond)
	got = rcv.delivered()
	if s := pushedSessions(t, h, got[3:]); !slices.Equal(s, after) {
		t.Fatalf("after disable and enable, the SETs were for %v, want only %v", s, after)
	}
}

// TestWebhookSecretRotation: after a rotation both secrets sign (two v1
// signatures, each verifying with its own secret); with no overlap only
// the new one does.
func TestWebhookSecretRotation(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	id, old := makeWebhook(t, h, rcv.URL)
	w := h.mustAdmin("POST", "/v1/webhooks/"+id+"/rotate-secret", "", http.StatusOK)
	fresh, err := transmit.ParseWebhookSecret(w["secret"].(string))
	if err != nil || w["secrets_signing"] != 2.0 {
		t.Fatalf("rotate: %v %v", w, err)
	}
	revokeN(t, 1, h)
	r := rcv.waitDistinct(t, 1, 10*time.Second)[0]
	if n := len(strings.Fields(r.Signature)); n != 2 {
		t.Fatalf("%d signatures after a rotation, want 2", n)
	}
	for _, k := range [][]byte{old, fresh} {
		if err := transmit.VerifyWebhook(k, r.Header, r.Body, time.Now(), time.Minute); err != nil {
			t.Fatalf("a signature does not verify: %v", err)
		}
	}
	w = h.mustAdmin("POST", "/v1/webhooks/"+id+"/rotate-secret", `{"overlap_seconds":0}`, http.StatusOK)
	newest, _ := transmit.ParseWebhookSecret(w["secret"].(string))
	revokeN(t, 1, h)
	r = rcv.waitDistinct(t, 2, 10*time.Second)[1]
	if n := len(strings.Fields(r.Signature)); n != 1 || transmit.VerifyWebhook(newest, r.Header, r.Body, time.Now(), time.Minute) != nil {
		t.Fatalf("with no overlap: signatures %q", r.Signature)
	}
	if transmit.VerifyWebhook(fresh, r.Header, r.Body, time.Now(), time.Minute) == nil {
		t.Fatal("the replaced secret still signs with no overlap")
	}
	if got := h.mustAdmin("GET", "/v1/webhooks/"+id, "", http.StatusOK); got["secret"] != nil {
		t.Fatalf("GET shows the secret: %v", got)
	}
	// Deleted: nothing more is sent, and it is gone.
	h.mustAdmin("DELETE", "/v1/webhooks/"+id, "", http.StatusNoContent)
	n := rcv.count()
	revokeN(t, 1, h)
	time.Sleep(1500 * time.Millisecond)
	if rcv.count() != n {
		t.Fatal("a deleted webhook was sent an event")
	}
	h.mustAdmin("GET", "/v1/webhooks/"+id, "", http.StatusNotFound)
}

// TestVerificationEvent: a verification request makes a verification SET
// with the state, pushed or polled; a second one at once is 429.
func TestVerificationEvent(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	rcv := newHookServer(t)
	auth := ssfReceiver(t, h, "https://rp.example")
	push := ssfDo(t, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+rcv.URL+`"}}`, http.StatusCreated)["stream_id"].(string)
	ssfDo(t, h, auth, "POST", transmit.VerificationPath, `{"stream_id":"`+push+`","state":"abc"}`, http.StatusNoContent)
	var r []hookRequest
	poll.For(t, 10*time.Second, func() bool { r = rcv.delivered(); return len(r) == 1 }, func() string { return "no verification SET" })
	_, claims := verifySET(t, h, string(r[0].Body))
	ev, _ := claims["events"].(map[string]any)[transmit.EventVerification].(map[string]any)
	sub, _ := claims["sub_id"].(map[string]any)
	if ev["state"] != "abc" || sub["format"] != "opaque" || sub["id"] != push {
		t.Fatalf("verification SET %v", claims)
	}
	if resp := h.raw("POST", transmit.VerificationPath, "application/json", `{"stream_id":"`+push+`"}`, auth); resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") == "" {
		t.Fatalf("a second verification at once: %d (Retry-After %q), want 429 with Retry-After", resp.status, resp.header.Get("Retry-After"))
	}

	polled := ssfDo(t, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8936"}}`, http.StatusCreated)["stream_id"].(string)
	ssfDo(t, h, auth, "POST", transmit.VerificationPath, `{"stream_id":"`+polled+`","state":"xyz"}`, http.StatusNoContent)
	out := ssfDo(t, h, auth, "POST", transmit.PollPath+polled, `{"returnImmediately":true}`, http.StatusOK)
	sets, _ := out["sets"].(map[string]any)
	if len(sets) != 1 {
		t.Fatalf("poll: %v", out)
	}
	for jti, set := range sets {
		_, c := verifySET(t, h, set.(string))
		if ev, _ := c["events"].(map[string]any)[transmit.EventVerification].(map[string]any); ev["state"] != "xyz" || c["jti"] != jti {
			t.Fatalf("polled verification SET %v", c)
		}
		out = ssfDo(t, h, auth, "POST", transmit.PollPath+polled, `{"returnImmediately":true,"ack":["`+jti+`"]}`, http.StatusOK)
	}
	if sets, _ := out["sets"].(map[string]any); len(sets) != 0 {
		t.Fatalf("the acknowledged verification SET came back: %v", out)
	}
}
