package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/transport"
)

// The HTTP contract of cookie mode and of self-service sessions, as any
// client sees it; browser_chromium_e2e_test.go shows the same in a real
// browser.

const appOrigin = "https://app.example.com"

func bootCookieMode(t *testing.T) *ledgerHarness {
	t.Helper()
	return boot(t, "", func(c *Config) {
		c.Issuer = "https://ledger.example.com"
		c.BrowserOrigins = []string{appOrigin, "http://localhost:5173"}
		// Short enough that the test can wait past it.
		c.ReuseGrace, c.RequestTimeout = 600*time.Millisecond, 300*time.Millisecond
	})
}

// browserResponse is a cookie-mode answer: status, body and the refresh
// cookie it set (nil: none).
type browserResponse struct {
	status int
	body   map[string]any
	raw    string
	cookie *http.Cookie
	header http.Header
}

func (h *ledgerHarness) browserPost(path, origin, contentType, body string, cookie string) browserResponse {
	h.t.Helper()
	req, err := http.NewRequest("POST", h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if cookie != "" {
		// The app's cookie: a browser sends it whichever page asks.
		req.AddCookie(&http.Cookie{Name: transport.RefreshCookie(appOrigin), Value: cookie})
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := browserResponse{status: resp.StatusCode, raw: string(b), header: resp.Header}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out.body); err != nil {
			h.t.Fatalf("POST %s: %d, body not JSON: %q", path, resp.StatusCode, b)
		}
	}
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, transport.RefreshCookiePrefix) {
			if c.Name != transport.RefreshCookie(origin) {
				h.t.Fatalf("POST %s from %s set the cookie %s, not its origin's", path, origin, c.Name)
			}
			out.cookie = c
		}
	}
	return out
}

// wantRefreshCookie checks the cookie's attributes as the browser will read them.
func wantRefreshCookie(t *testing.T, r browserResponse) string {
	t.Helper()
	if r.status != http.StatusOK || r.cookie == nil {
		t.Fatalf("status %d %v, cookie %v", r.status, r.body, r.cookie)
	}
	c := r.cookie
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" || c.MaxAge < 3600 {
		t.Fatalf("cookie attributes: %+v", c)
	}
	if !strings.HasPrefix(c.Value, "slrt_") {
		t.Fatalf("cookie value is not a refresh token")
	}
	// The page gets the access token only.
	if strings.Contains(r.raw, "slrt_") || r.body["refresh_token"] != nil || r.body["access_token"] == nil || r.body["session_id"] == nil {
		t.Fatalf("body %s", r.raw)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	return c.Value
}

func TestCookieModeOverHTTP(t *testing.T) {
	h := bootCookieMode(t)
	s := h.issue(`{"user_id":"alice","device":{"name":"laptop"}}`)
	const js = "application/json"

	in := h.browserPost("/browser/signin", appOrigin, js, `{"refresh_token":"`+s.Refresh+`"}`, "")
	cookie := wantRefreshCookie(t, in)
	if acao, acac := in.header.Get("Access-Control-Allow-Origin"), in.header.Get("Access-Control-Allow-Credentials"); acao != appOrigin || acac != "true" {
		t.Fatalf("CORS headers %q %q", acao, acac)
	}

	// CSRF: with the user's cookie, every request that is not from a listed
	// origin with a JSON body is refused, and changes nothing.
	before := h.history(s.ID)
	for _, tc := range []struct {
		name, origin, contentType, body string
		want                            int
	}{
		{"no Origin", "", js, `{}`, http.StatusForbidden},
		{"an unlisted origin", "https://evil.example.com", js, `{}`, http.StatusForbidden},
		{"a sibling subdomain", "https://evil.app.example.com", js, `{}`, http.StatusForbidden},
		{"a listed origin on another port", "https://app.example.com:8443", js, `{}`, http.StatusForbidden},
		{"a listed origin over http", "http://app.example.com", js, `{}`, http.StatusForbidden},
		{"an opaque origin (sandboxed frame)", "null", js, `{}`, http.StatusForbidden},
		{"a cross-site form post", "https://evil.example.com", "application/x-www-form-urlencoded", "a=b", http.StatusForbidden},
		{"a form post claiming the listed origin", appOrigin, "application/x-www-form-urlencoded", "a=b", http.StatusUnsupportedMediaType},
		{"text/plain, as a no-preflight fetch sends", appOrigin, "text/plain", `{}`, http.StatusUnsupportedMediaType},
		{"multipart", appOrigin, "multipart/form-data; boundary=x", "--x--", http.StatusUnsupportedMediaType},
	} {
		for _, path := range []string{"/browser/refresh", "/browser/signout"} {
			r := h.browserPost(path, tc.origin, tc.contentType, tc.body, cookie)
			if r.status != tc.want || r.cookie != nil || r.body["error"] != "invalid_request" {
				t.Errorf("%s to %s: %d %s, cookie %v; want %d invalid_request and no cookie", tc.name, path, r.status, r.raw, r.cookie, tc.want)
			}
			if r.header.Get("Access-Control-Allow-Origin") == tc.origin && tc.origin != appOrigin && tc.origin != "" {
				t.Errorf("%s: CORS allowed %q", tc.name, tc.origin)
			}
		}
	}
	if after := h.history(s.ID); !slices.Equal(after, before) {
		t.Fatalf("refused requests changed the session: %v → %v", before, after)
	}

	// Bad input gets a clear 4xx.
	for _, tc := range []struct{ path, body string }{
		{"/browser/signin", `{}`},
		{"/browser/signin", `{"refresh_token":"slrt_nope"}`},
		{"/browser/signin", `{"refresh_token":" ` + s.Refresh + `"}`},
		{"/browser/signin", `[`},
		{"/browser/signin", `{"refresh_token":"x","extra":1}`},
		{"/browser/refresh", `{"refresh_token":"x"}`},
		{"/browser/refresh?refresh_token=x", `{}`},
	} {
		r := h.browserPost(tc.path, appOrigin, js, tc.body, "")
		if r.status != http.StatusBadRequest || (r.body["error"] != "invalid_request" && r.body["error"] != "invalid_grant") || strings.Contains(r.raw, "slrt_") {
			t.Errorf("POST %s %s: %d %s", tc.path, tc.body, r.status, r.raw)
		}
	}

	// Preflight: the listed origin is allowed with credentials, others are not.
	pre := func(origin string) http.Header {
		req, _ := http.NewRequest("OPTIONS", h.url+"/browser/refresh", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header
	}
	if h := pre("http://localhost:5173"); h.Get("Access-Control-Allow-Origin") != "http://localhost:5173" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight from a listed origin: %v", h)
	}
	if h := pre("https://evil.example.com"); h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("preflight from an unlisted origin: %v", h)
	}

	// Another listed origin's page cannot use the app's cookie.
	if r := h.browserPost("/browser/refresh", "http://localhost:5173", js, `{}`, cookie); r.status != http.StatusBadRequest || r.body["error"] != "invalid_grant" {
		t.Fatalf("another listed origin refreshed with the app's cookie: %d %s", r.status, r.raw)
	}
	if after := h.history(s.ID); !slices.Equal(after, before) {
		t.Fatalf("another origin changed the session: %v → %v", before, after)
	}

	// Refresh rotates the cookie; the session's first token, replayed after
	// the grace window, is reuse and revokes the session.
	r := h.browserPost("/browser/refresh", appOrigin, js, "", cookie)
	next := wantRefreshCookie(t, r)
	if next == cookie {
		t.Fatal("the cookie did not rotate")
	}
	at := r.body["access_token"].(string)
	st, me := h.do("GET", "/v1/me/sessions", "", "", http.Header{"Authorization": {"Bearer " + at}})
	if st != http.StatusOK || len(me["sessions"].([]any)) != 1 || me["sessions"].([]any)[0].(map[string]any)["current"] != true {
		t.Fatalf("my sessions: %d %v", st, me)
	}
	time.Sleep(700 * time.Millisecond) // past the grace window
	h.wantInvalidGrant(s.Refresh)
	r = h.browserPost("/browser/refresh", appOrigin, js, `{}`, next)
	if r.status != http.StatusBadRequest || r.body["error"] != "invalid_grant" || r.cookie == nil || r.cookie.MaxAge >= 0 {
		t.Fatalf("refresh after reuse: %d %s, cookie %v; want invalid_grant and the cookie cleared", r.status, r.raw, r.cookie)
	}
	if hist := h.history(s.ID); !slices.Contains(hist, "session.reused") || !slices.Contains(hist, "session.revoked") {
		t.Fatalf("history %v", hist)
	}
	if st, _ := h.do("GET", "/v1/me/sessions", "", "", http.Header{"Authorization": {"Bearer " + at}}); st != http.StatusUnauthorized {
		t.Fatalf("a revoked session's access token listed sessions: %d", st)
	}

	// The token handed to the page, replayed at once (within the grace
	// window), is reuse: sign-in rotated twice, so no tolerated retry can
	// answer with the cookie's token in a body.
	s3 := h.issue(`{"user_id":"alice"}`)
	c3 := wantRefreshCookie(t, h.browserPost("/browser/signin", appOrigin, js, `{"refresh_token":"`+s3.Refresh+`"}`, ""))
	if st, out := h.refresh(s3.Refresh); st != http.StatusBadRequest || out["error"] != "invalid_grant" || out["refresh_token"] == c3 {
		t.Fatalf("an immediate replay of the handed-over token: %d %v", st, out)
	}
	if hist := h.history(s3.ID); !slices.Contains(hist, "session.revoked") {
		t.Fatalf("history after the replay %v", hist)
	}

	// Signing in over the cookie of another session signs that one out.
	s4 := h.issue(`{"user_id":"alice"}`)
	c4 := wantRefreshCookie(t, h.browserPost("/browser/signin", appOrigin, js, `{"refresh_token":"`+s4.Refresh+`"}`, ""))
	s5 := h.issue(`{"user_id":"bob"}`)
	wantRefreshCookie(t, h.browserPost("/browser/signin", appOrigin, js, `{"refresh_token":"`+s5.Refresh+`"}`, c4))
	if ev := h.events(s4.ID); ev[len(ev)-1]["type"] != "session.revoked" || ev[len(ev)-1]["reason"] != "signed_out" {
		t.Fatalf("the browser's previous session: %v", ev)
	}

	// Sign-out revokes the cookie's session and clears the cookie.
	s2 := h.issue(`{"user_id":"alice"}`)
	c2 := wantRefreshCookie(t, h.browserPost("/browser/signin", appOrigin, js, `{"refresh_token":"`+s2.Refresh+`"}`, ""))
	out := h.browserPost("/browser/signout", appOrigin, js, "", c2)
	if out.status != http.StatusNoContent || out.cookie == nil || out.cookie.MaxAge >= 0 || out.cookie.Value != "" {
		t.Fatalf("sign-out: %d %s, cookie %+v", out.status, out.raw, out.cookie)
	}
	if ev := h.events(s2.ID); ev[len(ev)-1]["type"] != "session.revoked" || ev[len(ev)-1]["reason"] != "signed_out" {
		t.Fatalf("history %v", ev)
	}
	if r := h.browserPost("/browser/refresh", appOrigin, js, "", ""); r.status != http.StatusBadRequest || r.body["error"] != "invalid_grant" {
		t.Fatalf("refresh without a cookie: %d %s", r.status, r.raw)
	}
}

// events returns a session's events as type plus the data's reason and actor.
func (h *ledgerHarness) events(sid string) []map[string]any {
	h.t.Helper()
	out := h.mustAdmin("GET", "/v1/sessions/"+sid+"/events", "", http.StatusOK)
	var events []map[string]any
	for _, e := range out["events"].([]any) {
		e := e.(map[string]any)
		m := map[string]any{"type": e["type"]}
		if d, ok := e["data"].(map[string]any); ok {
			m["reason"], m["actor"] = d["reason"], d["actor"]
		}
		events = append(events, m)
	}
	return events
}

func TestSelfServiceSessions(t *testing.T) {
	h := boot(t, "", nil) // no cookie mode: self-service needs none
	laptop := h.issue(`{"user_id":"alice","device":{"name":"laptop","user_agent":"Firefox"}}`)
	phone := h.issue(`{"user_id":"alice","device":{"name":"phone"}}`)
	tablet := h.issue(`{"user_id":"alice","device":{"name":"tablet"}}`)
	bob := h.issue(`{"user_id":"bob"}`)
	as := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

	st, out := h.do("GET", "/v1/me/sessions", "", "", as(laptop.Access))
	if st != http.StatusOK {
		t.Fatalf("list: %d %v", st, out)
	}
	list := out["sessions"].([]any)
	if len(list) != 3 {
		t.Fatalf("alice sees %d sessions, want 3: %v", len(list), out)
	}
	for _, s := range list {
		s := s.(map[string]any)
		if s["current"] != (s["session_id"] == laptop.ID) || s["device"] == nil || s["created_at"] == nil || s["last_active_at"] == nil || s["user_id"] != nil {
			t.Fatalf("session %v", s)
		}
	}
	// Pages.
	if st, out := h.do("GET", "/v1/me/sessions?limit=2", "", "", as(laptop.Access)); st != http.StatusOK || len(out["sessions"].([]any)) != 2 || out["next_cursor"] == nil {
		t.Fatalf("page: %d %v", st, out)
	}

	// Authentication: a missing token is a bare challenge; anything but a
	// live session's access token is invalid_token.
	resp := h.raw("GET", "/v1/me/sessions", "", "", nil)
	if resp.status != http.StatusUnauthorized || resp.contentType != "application/problem+json" {
		t.Fatalf("no token: %d %s", resp.status, resp.body)
	}
	for name, tok := range map[string]string{
		"a refresh token":       laptop.Refresh,
		"garbage":               "not-a-token",
		"an altered signature":  laptop.Access[:len(laptop.Access)-4] + "AAAA",
		"the admin token":       testAdminToken,
		"an alg=none token":     "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
		"a header-only garbage": "a.b.c",
	} {
		req, _ := http.NewRequest("GET", h.url+"/v1/me/sessions", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		r, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %q", name, r.StatusCode, r.Header.Get("WWW-Authenticate"))
		}
	}

	// Another user's session is not found, and stays live; so is an unknown id.
	for _, id := range []string{bob.ID, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "%2e%2e", url.PathEscape("a/b")} {
		if st, out := h.do("DELETE", "/v1/me/sessions/"+id, "", "", as(laptop.Access)); st != http.StatusNotFound {
			t.Fatalf("DELETE %s: %d %v", id, st, out)
		}
	}
	if !h.active(bob.Access) {
		t.Fatal("bob's session ended")
	}
	if st, out := h.do("GET", "/v1/me/sessions", "", "", as(bob.Access)); st != http.StatusOK || len(out["sessions"].([]any)) != 1 {
		t.Fatalf("bob: %d %v", st, out)
	}

	// Alice ends her phone's session from her laptop: recorded as the user's doing.
	if st, out := h.do("DELETE", "/v1/me/sessions/"+phone.ID, "", "", as(laptop.Access)); st != http.StatusNoContent {
		t.Fatalf("DELETE own: %d %v", st, out)
	}
	if ev := h.events(phone.ID); ev[len(ev)-1]["type"] != "session.revoked" || ev[len(ev)-1]["actor"] != "user" || ev[len(ev)-1]["reason"] != "user_revoked" {
		t.Fatalf("phone's history %v", ev)
	}
	if st, _ := h.do("DELETE", "/v1/me/sessions/"+phone.ID, "", "", as(laptop.Access)); st != http.StatusNotFound {
		t.Fatalf("DELETE ended: %d", st)
	}
	// The phone's own token is refused at once.
	if st, _ := h.do("GET", "/v1/me/sessions", "", "", as(phone.Access)); st != http.StatusUnauthorized {
		t.Fatalf("ended session's token: %d", st)
	}

	// Sign out other devices, with a body refused first.
	if st, _ := h.do("POST", "/v1/me/sessions/revoke-others", "application/json", `{"x":1}`, as(laptop.Access)); st != http.StatusBadRequest {
		t.Fatalf("revoke-others with a body: %d", st)
	}
	more := h.issue(`{"user_id":"alice","device":{"name":"desktop"}}`)
	st, out = h.do("POST", "/v1/me/sessions/revoke-others", "", "", as(laptop.Access))
	if st != http.StatusOK || out["revoked"] != float64(2) {
		t.Fatalf("revoke-others: %d %v, want 2 (tablet, desktop)", st, out)
	}
	for _, id := range []string{tablet.ID, more.ID} {
		if ev := h.events(id); ev[len(ev)-1]["actor"] != "user" {
			t.Fatalf("%s: %v", id, ev)
		}
	}
	st, out = h.do("GET", "/v1/me/sessions", "", "", as(laptop.Access))
	if list := out["sessions"].([]any); st != http.StatusOK || len(list) != 1 || list[0].(map[string]any)["session_id"] != laptop.ID {
		t.Fatalf("after revoke-others: %d %v", st, out)
	}
	if !h.active(bob.Access) {
		t.Fatal("bob's session ended")
	}

	// Cookie mode is off: its endpoints do not exist.
	if r := h.browserPost("/browser/refresh", appOrigin, "application/json", `{}`, ""); r.status != http.StatusNotFound {
		t.Fatalf("cookie mode off: /browser/refresh answered %d", r.status)
	}
}

func TestBrowserOriginsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" ok, else a part of the error
	}{
		{[]string{"--browser-origins", "https://app.example.com,http://localhost:3000", "--issuer", "https://id.example.com"}, ""},
		{[]string{"--browser-origins", "http://localhost:3000"}, ""}, // the default issuer is http://localhost:8080
		{[]string{"--browser-origins", "https://APP.example.com:443/"}, ""},
		{[]string{"--browser-origins", "http://app.example.com", "--issuer", "https://id.example.com"}, "must be https"},
		{[]string{"--browser-origins", "https://app.example.com/login", "--issuer", "https://id.example.com"}, "no path"},
		{[]string{"--browser-origins", "*", "--issuer", "https://id.example.com"}, "http or https origin"},
		{[]string{"--browser-origins", "https://app.example.com", "--issuer", "http://id.example.com"}, "needs an https issuer"},
	} {
		cfg, err := parseServeFlags(tc.args, func(string) (string, bool) { return "", false }, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one saying %q", tc.args, err, tc.want)
		case tc.args[1] == "https://APP.example.com:443/" && !slices.Equal(cfg.BrowserOrigins, []string{"https://app.example.com"}):
			t.Errorf("normalized to %v", cfg.BrowserOrigins)
		}
	}
}
