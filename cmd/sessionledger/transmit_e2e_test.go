package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/sessionledger/sessionledger/transmit"
)

// received is one request a test receiver got.
type received struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// testReceiver is an HTTP receiver of webhooks or SET pushes that records
// what it gets and answers status() (202 unless changed).
type testReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	status int
	notify chan struct{}
}

func newTestReceiver(t testing.TB) *testReceiver {
	t.Helper()
	r := &testReceiver{status: http.StatusAccepted, notify: make(chan struct{}, 1024)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := r.status
		if status < 300 {
			r.got = append(r.got, received{Header: req.Header.Clone(), Body: body, At: time.Now()})
		}
		r.mu.Unlock()
		w.WriteHeader(status)
		if status < 300 {
			r.notify <- struct{}{}
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *testReceiver) setStatus(s int) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

func (r *testReceiver) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// waitFor waits until the receiver has n requests.
func (r *testReceiver) waitFor(t testing.TB, n int, within time.Duration) []received {
	t.Helper()
	deadline := time.After(within)
	for {
		if got := r.all(); len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("the receiver got %d requests within %s, want %d", len(r.all()), within, n)
		}
	}
}

// setClaims verifies a SET against the ledger's SET JWKS with
// lestrrat-go/jwx and returns its header and claims.
func verifySET(t testing.TB, h *ledgerHarness, set string) (map[string]any, map[string]any) {
	t.Helper()
	resp := h.raw("GET", transmit.SETKeysPath, "", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET %s: %d", transmit.SETKeysPath, resp.status)
	}
	keys, err := jwk.Parse([]byte(resp.body))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify([]byte(set), jws.WithKeySet(keys, jws.WithRequireKid(true)))
	if err != nil {
		t.Fatalf("the SET does not verify against %s: %v", transmit.SETKeysPath, err)
	}
	var header, claims map[string]any
	parts := strings.Split(set, ".")
	if err := json.Unmarshal(mustB64(t, parts[0]), &header); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return header, claims
}

func TestWebhookAndSSFDelivery(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	hook := newTestReceiver(t)
	push := newTestReceiver(t)

	// A webhook of revocations.
	w := h.mustAdmin("POST", "/v1/webhooks", `{"url":"`+hook.URL+`/hook","events":["session.revoked"]}`, http.StatusCreated)
	secret, _ := w["secret"].(string)
	if !strings.HasPrefix(secret, transmit.SecretPrefix) {
		t.Fatalf("webhook created without a secret: %v", w)
	}
	// A receiver and its push stream.
	r := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"gateway","audience":"https://gateway.test"}`, http.StatusCreated)
	token, _ := r["token"].(string)
	auth := http.Header{"Authorization": {"Bearer " + token}}
	st, stream := h.do("POST", transmit.ConfigurationPath, "application/json",
		`{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+push.URL+`/events","authorization_header":"Bearer receiver-secret"},"events_requested":["`+transmit.EventSessionRevoked+`"]}`, auth)
	if st != http.StatusCreated {
		t.Fatalf("create push stream: %d %v", st, stream)
	}
	// And a poll stream.
	st, polled := h.do("POST", transmit.ConfigurationPath, "application/json",
		`{"delivery":{"method":"urn:ietf:rfc:8936"},"events_requested":["`+transmit.EventSessionRevoked+`"]}`, auth)
	if st != http.StatusCreated {
		t.Fatalf("create poll stream: %d %v", st, polled)
	}

	s := h.issue(`{"user_id":"alice"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)

	got := hook.waitFor(t, 1, 10*time.Second)
	key, err := transmit.ParseWebhookSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := transmit.VerifyWebhook(key, got[0].Header, got[0].Body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("webhook does not verify: %v", err)
	}
	var body map[string]any
	_ = json.Unmarshal(got[0].Body, &body)
	data, _ := body["data"].(map[string]any)
	if body["type"] != "session.revoked" || data["session_id"] != s.ID || data["user_id"] != "alice" || data["reason"] != "admin_revoked" {
		t.Fatalf("webhook body %s", got[0].Body)
	}

	sets := push.waitFor(t, 1, 10*time.Second)
	if ct := sets[0].Header.Get("Content-Type"); ct != "application/secevent+jwt" || sets[0].Header.Get("Authorization") != "Bearer receiver-secret" {
		t.Fatalf("push headers %v", sets[0].Header)
	}
	header, claims := verifySET(t, h, string(sets[0].Body))
	if header["typ"] != "secevent+jwt" || header["alg"] != "RS256" {
		t.Fatalf("SET header %v", header)
	}
	events, _ := claims["events"].(map[string]any)
	ev, _ := events[transmit.EventSessionRevoked].(map[string]any)
	sub, _ := claims["sub_id"].(map[string]any)
	if ev == nil || claims["aud"] != "https://gateway.test" || claims["iss"] != "http://ledger.test" || sub == nil || claims["sub"] != nil || claims["exp"] != nil {
		t.Fatalf("SET claims %v", claims)
	}

	// Poll: the same event, then nothing once acknowledged.
	pollURL := transmit.PollPath + polled["stream_id"].(string)
	st, out := h.do("POST", pollURL, "application/json", `{"returnImmediately":true}`, auth)
	setsMap, _ := out["sets"].(map[string]any)
	if st != http.StatusOK || len(setsMap) != 1 {
		t.Fatalf("poll: %d %v", st, out)
	}
	var jti string
	for k, v := range setsMap {
		jti = k
		_, c := verifySET(t, h, v.(string))
		if c["jti"] != k {
			t.Fatalf("polled SET's jti %v under key %s", c["jti"], k)
		}
	}
	st, out = h.do("POST", pollURL, "application/json", `{"returnImmediately":true,"ack":["`+jti+`"]}`, auth)
	if setsMap, _ = out["sets"].(map[string]any); st != http.StatusOK || len(setsMap) != 0 {
		t.Fatalf("poll after ack: %d %v", st, out)
	}
	if claims["jti"] != jti {
		t.Fatalf("push jti %v, poll jti %s: the same event's SET must have the same jti", claims["jti"], jti)
	} // A PATCH that sends delivery without the header keeps it (SSF 1.0
	// §8.1.1.3): the next push still carries it.
	ssfDo(t, h, auth, "PATCH", transmit.ConfigurationPath, `{"stream_id":"`+stream["stream_id"].(string)+`","delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+push.URL+`/events2"}}`, http.StatusOK)
	s2 := h.issue(`{"user_id":"alice"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+s2.ID, "", http.StatusNoContent)
	if again := push.waitFor(t, 2, 10*time.Second)[1]; again.Header.Get("Authorization") != "Bearer receiver-secret" {
		t.Fatalf("after a PATCH without the header, the push carried %q", again.Header.Get("Authorization"))
	}
}

func mustB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
