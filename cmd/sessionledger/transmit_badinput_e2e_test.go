package main

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sessionledger/sessionledger/transmit"
)

// TestTransmitBadInput: what a careless or hostile admin or receiver sends
// to the webhook and SSF endpoints gets a clear 4xx, and no request goes to
// a URL the policy refuses.
func TestTransmitBadInput(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DeliveryAllowHosts = "hooks.example.com,*.partner.example" })
	var hits atomic.Int64
	internal := newHookServer(t) // stands for an internal service
	internal.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })

	webhooks := []struct {
		name, body string
		want       int
		detail     string
	}{
		{"http", `{"url":"http://hooks.example.com/x","events":["session.revoked"]}`, 400, "https is required"},
		{"loopback", `{"url":"` + strings.Replace(internal.URL, "http://", "https://", 1) + `","events":["session.revoked"]}`, 400, "loopback"},
		{"loopback over http", `{"url":"` + internal.URL + `","events":["session.revoked"]}`, 400, "https is required"},
		{"cloud metadata", `{"url":"https://169.254.169.254/latest/meta-data","events":["session.revoked"]}`, 400, "private"},
		{"private", `{"url":"https://10.1.2.3/x","events":["session.revoked"]}`, 400, "private"},
		{"mapped private", `{"url":"https://[::ffff:192.168.0.1]/x","events":["session.revoked"]}`, 400, "private"},
		{"not allowed host", `{"url":"https://evil.example.net/x","events":["session.revoked"]}`, 400, "allow-list"},
		{"wildcard apex", `{"url":"https://partner.example/x","events":["session.revoked"]}`, 400, "allow-list"},
		{"userinfo", `{"url":"https://user:pass@hooks.example.com/x","events":["session.revoked"]}`, 400, "user information"},
		{"relative", `{"url":"/x","events":["session.revoked"]}`, 400, "absolute"},
		{"unknown type", `{"url":"https://hooks.example.com/x","events":["session.deleted"]}`, 400, "unknown event type"},
		{"no types", `{"url":"https://hooks.example.com/x","events":[]}`, 400, "at least one"},
		{"long url", `{"url":"https://hooks.example.com/` + strings.Repeat("a", 3000) + `","events":["session.revoked"]}`, 400, "longer than"},
		{"unknown field", `{"url":"https://hooks.example.com/x","events":["session.revoked"],"secret":"mine"}`, 400, "does not take"},
		{"not JSON", `{"url":`, 400, ""},
		{"ok", `{"url":"https://a.partner.example/x","events":["session.revoked","session.revoked"]}`, 201, ""},
	}
	for _, c := range webhooks {
		st, out := h.admin("POST", "/v1/webhooks", c.body)
		detail, _ := out["detail"].(string)
		if st != c.want || !strings.Contains(detail, c.detail) {
			t.Errorf("%s: %d %v, want %d with %q", c.name, st, out, c.want, c.detail)
		}
	}
	if st, _ := h.do("POST", "/v1/webhooks", "text/plain", `{}`, adminHeader); st != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d, want 415", st)
	}
	if st, _ := h.do("POST", "/v1/webhooks", "application/json", `{}`, nil); st != http.StatusUnauthorized {
		t.Errorf("no admin token: %d, want 401", st)
	}
	for _, path := range []string{"/v1/webhooks/nope", "/v1/webhooks/01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", "/v1/deliveries/..%2f/failures"} {
		if st, _ := h.admin("GET", path, ""); st != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, st)
		}
	}
	for _, body := range []string{`{"overlap_seconds":-1}`, `{"overlap_seconds":1e9}`} {
		id := h.mustAdmin("GET", "/v1/webhooks", "", http.StatusOK)["webhooks"].([]any)[0].(map[string]any)["id"].(string)
		if st, _ := h.admin("POST", "/v1/webhooks/"+id+"/rotate-secret", body); st != http.StatusBadRequest {
			t.Errorf("rotate %s: %d, want 400", body, st)
		}
	}

	// SSF: authentication and scopes.
	if resp := h.raw("GET", transmit.ConfigurationPath, "", "", nil); resp.status != 401 || !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no token: %d %v", resp.status, resp.header)
	}
	for _, tok := range []string{"garbage", "slsr_01JD3Z9V6Q4Q4WJ5X7K8M9N0PA_" + strings.Repeat("A", 43), "slsr_x_y"} {
		if st, _ := h.do("GET", transmit.ConfigurationPath, "", "", http.Header{"Authorization": {"Bearer " + tok}}); st != http.StatusUnauthorized {
			t.Errorf("token %q: %d, want 401", tok, st)
		}
	}
	a := ssfReceiver(t, h, "https://a.example")
	b := ssfReceiver(t, h, "https://b.example")
	readOnly := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"ro","audience":"https://ro.example","scopes":["ssf.read"]}`, http.StatusCreated)
	ro := http.Header{"Authorization": {"Bearer " + readOnly["token"].(string)}}
	if resp := h.raw("POST", transmit.ConfigurationPath, "application/json", `{"delivery":{"method":"urn:ietf:rfc:8936"}}`, ro); resp.status != 403 || !strings.Contains(resp.header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Errorf("read-only receiver creating a stream: %d %v", resp.status, resp.header)
	}
	if resp := h.raw("GET", transmit.ConfigurationPath, "", "", ro); resp.status != http.StatusOK || resp.body != "[]" {
		t.Errorf("read-only receiver listing its streams: %d %s", resp.status, resp.body)
	}
	manageOnly := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"mo","audience":"https://mo.example","scopes":["ssf.manage"]}`, http.StatusCreated)
	mo := http.Header{"Authorization": {"Bearer " + manageOnly["token"].(string)}}
	moStream := ssfDo(t, h, mo, "POST", transmit.ConfigurationPath, `{}`, http.StatusCreated)["stream_id"].(string)
	if st, _ := h.do("POST", transmit.PollPath+moStream, "application/json", `{"returnImmediately":true}`, mo); st != http.StatusForbidden {
		t.Errorf("polling with ssf.manage only: %d, want 403 (ssf.read)", st)
	}
	for _, bad := range []string{`{"name":"","audience":"x"}`, `{"name":"x","audience":""}`, `{"name":"x","audience":"y","scopes":["admin"]}`} {
		if st, _ := h.admin("POST", "/v1/ssf/receivers", bad); st != http.StatusBadRequest {
			t.Errorf("receiver %s: %d, want 400", bad, st)
		}
	}

	polled := ssfDo(t, h, a, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8936"}}`, http.StatusCreated)
	id := polled["stream_id"].(string)
	if polled["aud"] != "https://a.example" || polled["delivery"].(map[string]any)["endpoint_url"] != "http://ledger.test"+transmit.PollPath+id {
		t.Errorf("poll stream %v", polled)
	}
	streams := []struct {
		name, method, body string
		want               int
		detail             string
	}{
		{"replace without delivery", "PUT", `{"stream_id":"` + id + `","events_requested":["` + transmit.EventSessionRevoked + `"]}`, 400, "delivery is required"},
		{"unknown method", "POST", `{"delivery":{"method":"urn:example:smoke-signals"}}`, 400, "delivery.method"},
		{"private push", "POST", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://192.168.1.1/x"}}`, 400, "private"},
		{"loopback push", "POST", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"` + internal.URL + `"}}`, 400, "https"},
		{"poll with a URL", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936","endpoint_url":"https://hooks.example.com/x"}}`, 400, "supplied by the transmitter"},
		{"header with a control character", "POST", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://hooks.example.com/x","authorization_header":"Bearer a\u0001b"}}`, 400, "one line"},
		{"header with a newline", "POST", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://hooks.example.com/x","authorization_header":"Bearer a\r\nX-Evil: 1"}}`, 400, "one line"},
		{"events not URIs", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"events_requested":["session-revoked"]}`, 400, "event type URIs"},
		{"no supported event", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"events_requested":["https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"]}`, 400, "none of events_requested"},
		{"too many events", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"events_requested":[` + strings.TrimSuffix(strings.Repeat(`"urn:x",`, 40), ",") + `]}`, 400, "more than"},
		{"long description", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"description":"` + strings.Repeat("d", 300) + `"}`, 400, "description"},
		{"another audience", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"aud":"https://b.example"}`, 400, "aud is set by the transmitter"},
		{"aud not a string", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"aud":7}`, 400, "aud"},
		{"events_requested not an array", "POST", `{"delivery":{"method":"urn:ietf:rfc:8936"},"events_requested":"x"}`, 400, ""},
		{"patch without id", "PATCH", `{"description":"x"}`, 400, "stream_id"},
		{"change the method", "PATCH", `{"stream_id":"` + id + `","delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://hooks.example.com/x"}}`, 400, "cannot change"},
		{"replace without events", "PUT", `{"stream_id":"` + id + `","delivery":{"method":"urn:ietf:rfc:8936"}}`, 400, "events_requested is required"},
		{"same aud back", "PATCH", `{"stream_id":"` + id + `","aud":"https://a.example","iss":"x","events_supported":[]}`, 200, ""},
	}
	for _, c := range streams {
		st, out := h.do(c.method, transmit.ConfigurationPath, "application/json", c.body, a)
		detail, _ := out["detail"].(string)
		if st != c.want || !strings.Contains(detail, c.detail) {
			t.Errorf("%s: %d %v, want %d with %q", c.name, st, out, c.want, c.detail)
		}
	}
	// No delivery: a poll stream (SSF 1.0 §8.1.1.1).
	def := ssfDo(t, h, b, "POST", transmit.ConfigurationPath, `{}`, http.StatusCreated)
	if d := def["delivery"].(map[string]any); d["method"] != transmit.DeliveryPoll || !strings.HasSuffix(d["endpoint_url"].(string), def["stream_id"].(string)) {
		t.Errorf("a stream created without delivery: %v", def)
	}
	ssfDo(t, h, b, "DELETE", transmit.ConfigurationPath+"?stream_id="+def["stream_id"].(string), "", http.StatusNoContent)
	// Another receiver's stream does not exist for b.
	for _, c := range []struct{ method, path, body string }{
		{"GET", transmit.ConfigurationPath + "?stream_id=" + id, ""},
		{"PATCH", transmit.ConfigurationPath, `{"stream_id":"` + id + `","description":"mine"}`},
		{"DELETE", transmit.ConfigurationPath + "?stream_id=" + id, ""},
		{"GET", transmit.StatusPath + "?stream_id=" + id, ""},
		{"POST", transmit.StatusPath, `{"stream_id":"` + id + `","status":"disabled"}`},
		{"POST", transmit.VerificationPath, `{"stream_id":"` + id + `"}`},
		{"POST", transmit.PollPath + id, `{"returnImmediately":true}`},
	} {
		if st, out := h.do(c.method, c.path, map[bool]string{true: "application/json"}[c.body != ""], c.body, b); st != http.StatusNotFound {
			t.Errorf("b: %s %s: %d %v, want 404", c.method, c.path, st, out)
		}
	}
	if resp := h.raw("GET", transmit.ConfigurationPath, "", "", b); resp.status != http.StatusOK || resp.body != "[]" {
		t.Errorf("b lists: %d %s, want no stream", resp.status, resp.body)
	}
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", transmit.StatusPath, `{"stream_id":"` + id + `","status":"stopped"}`, 400},
		{"POST", transmit.StatusPath, `{"status":"paused"}`, 400},
		{"GET", transmit.StatusPath, "", 400},
		{"DELETE", transmit.ConfigurationPath, "", 400},
		{"POST", transmit.PollPath + id, `{"maxEvents":1000}`, 400},
		{"POST", transmit.PollPath + id, `{"maxEvents":-1}`, 400},
		{"POST", transmit.PollPath + id, `{"ack":"x"}`, 400},
		{"POST", transmit.VerificationPath, `{"stream_id":"` + id + `","state":"` + strings.Repeat("s", 300) + `"}`, 400},
	} {
		if st, out := h.do(c.method, c.path, map[bool]string{true: "application/json"}[c.body != ""], c.body, a); st != c.want {
			t.Errorf("%s %s %s: %d %v, want %d", c.method, c.path, c.body, st, out, c.want)
		}
	}
	// An oversized configuration is refused before it is read.
	if st, _ := h.do("POST", transmit.ConfigurationPath, "application/json", `{"description":"`+strings.Repeat("x", 70<<10)+`"}`, a); st != http.StatusRequestEntityTooLarge {
		t.Errorf("a 70 KiB stream configuration: %d, want 413", st)
	}
	// A push stream is not polled.
	push := ssfDo(t, h, a, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://hooks.example.com/ssf"}}`, http.StatusCreated)["stream_id"].(string)
	if st, _ := h.do("POST", transmit.PollPath+push, "application/json", `{}`, a); st != http.StatusBadRequest {
		t.Errorf("polling a push stream: %d, want 400", st)
	}
	// At most 10 streams per receiver.
	for i := 0; ; i++ {
		st, out := h.do("POST", transmit.ConfigurationPath, "application/json", `{"delivery":{"method":"urn:ietf:rfc:8936"}}`, a)
		if st == http.StatusConflict {
			if i+2 != transmit.MaxStreamsPerReceiver {
				t.Errorf("the receiver got %d streams, want %d", i+2, transmit.MaxStreamsPerReceiver)
			}
			break
		}
		if st != http.StatusCreated || i > 20 {
			t.Fatalf("stream %d: %d %v", i, st, out)
		}
	}
	// A deleted receiver's token is refused, and its streams are gone.
	rid := ""
	for _, r := range h.mustAdmin("GET", "/v1/ssf/receivers", "", http.StatusOK)["receivers"].([]any) {
		if r.(map[string]any)["audience"] == "https://a.example" {
			rid = r.(map[string]any)["id"].(string)
		}
		if _, leaked := r.(map[string]any)["digest"]; leaked {
			t.Errorf("the receiver list shows a token digest: %v", r)
		}
	}
	h.mustAdmin("DELETE", "/v1/ssf/receivers/"+rid, "", http.StatusNoContent)
	if st, _ := h.do("GET", transmit.ConfigurationPath, "", "", a); st != http.StatusUnauthorized {
		t.Errorf("a deleted receiver's token: %d, want 401", st)
	}
	if st, _ := h.admin("GET", transmit.ConfigurationPath+"?stream_id="+id, ""); st != http.StatusNotFound {
		t.Errorf("a deleted receiver's stream: %d, want 404", st)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal service got %d requests", n)
	}
}

// TestSSFOnPublicListenerTakesNoAdminToken: with --admin-addr, the SSF
// endpoints on the public listener take receivers' tokens only.
func TestSSFOnPublicListenerTakesNoAdminToken(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	if st, _ := h.do("GET", transmit.ConfigurationPath, "", "", adminHeader); st != http.StatusUnauthorized {
		t.Fatalf("the admin token on the public listener: %d, want 401", st)
	}
	admin := &ledgerHarness{t: t, url: h.m.AdminURL(), client: h.client}
	r := admin.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"x","audience":"https://x.example"}`, http.StatusCreated)
	if resp := h.raw("GET", transmit.ConfigurationPath, "", "", http.Header{"Authorization": {"Bearer " + r["token"].(string)}}); resp.status != http.StatusOK {
		t.Fatalf("a receiver's token on the public listener: %d", resp.status)
	}
	if st, _ := h.do("POST", "/v1/ssf/receivers", "application/json", `{}`, adminHeader); st != http.StatusNotFound {
		t.Fatalf("the receivers' admin API on the public listener: %d, want 404", st)
	}
}
