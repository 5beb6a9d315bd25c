package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/secrets"
)

// What standard clients and newcomers trip on: the client_id claim of RFC
// 9068, introspection with client_secret_basic, the bearer scheme in any
// case, one whitespace rule for tokens, and a separate admin listener.

// claimsOf decodes an access token's payload without verifying it.
func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %d segments", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSessionsRecordTheirClient(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.DefaultClientID = "web" })
	mobile := h.issue(`{"user_id":"alice","client_id":"ios-app"}`)
	web := h.issue(`{"user_id":"alice"}`)

	for _, tc := range []struct {
		s    session
		want string
	}{{mobile, "ios-app"}, {web, "web"}} {
		if got := claimsOf(t, tc.s.Access)["client_id"]; got != tc.want {
			t.Fatalf("client_id claim %v, want %s", got, tc.want)
		}
		// Rotation keeps it, from the session's issue event.
		next := h.mustRefresh(tc.s.Refresh)
		if got := claimsOf(t, next.Access)["client_id"]; got != tc.want {
			t.Fatalf("after rotation: client_id claim %v, want %s", got, tc.want)
		}
		for _, tok := range []string{next.Access, next.Refresh} {
			out := h.mustForm("/oauth2/introspect", url.Values{"token": {tok}}, adminHeader, http.StatusOK)
			if out["client_id"] != tc.want {
				t.Fatalf("introspection %v, want client_id %s", out, tc.want)
			}
		}
	}
	// In the listing and in the stream.
	byID := map[string]string{}
	for _, s := range h.userSessions("alice") {
		byID[s["session_id"].(string)], _ = s["client_id"].(string)
	}
	if byID[mobile.ID] != "ios-app" || byID[web.ID] != "web" {
		t.Fatalf("listing client ids %v", byID)
	}
	st, out := h.admin("GET", "/v1/sessions/"+mobile.ID+"/events", "")
	if st != http.StatusOK || !strings.Contains(mustJSON(t, out), `"client_id":"ios-app"`) {
		t.Fatalf("history %d %v lacks the client id", st, out)
	}
	// A session survives a restart with its client (snapshot or replay).
	h.close()
	h2 := boot(t, h.dataDir, func(c *Config) { c.DefaultClientID = "other-default" })
	if next := h2.mustRefresh(h2.mustRefresh(mobile.Refresh).Refresh); claimsOf(t, next.Access)["client_id"] != "ios-app" {
		t.Fatal("a restart lost the session's client")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// basic is an Authorization header of HTTP Basic as RFC 6749 §2.3.1 has a
// client send it: id and secret form-urlencoded first.
func basic(id, secret string) http.Header {
	cred := url.QueryEscape(id) + ":" + url.QueryEscape(secret)
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(cred))}}
}

func TestIntrospectionClientsAuthenticateWithBasic(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)

	// The metadata advertises exactly the registered method that works.
	st, meta := h.do("GET", "/.well-known/oauth-authorization-server", "", "", nil)
	if st != http.StatusOK || mustJSON(t, meta["introspection_endpoint_auth_methods_supported"]) != `["client_secret_basic"]` {
		t.Fatalf("metadata %d %v", st, meta)
	}

	var stdout, stderr strings.Builder
	if err := run(t.Context(), []string{"introspection-clients", "add", "--data-dir", h.dataDir, "orders-api"}, &stdout, &stderr); err != nil {
		t.Fatalf("add: %v %s", err, stderr.String())
	}
	var created struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &created); err != nil || created.ClientID != "orders-api" || !strings.HasPrefix(created.ClientSecret, secrets.ClientSecretPrefix) {
		t.Fatalf("add printed %q: %v", stdout.String(), err)
	}
	raw, err := os.ReadFile(filepath.Join(h.dataDir, secrets.ClientsFile))
	if err != nil || strings.Contains(string(raw), created.ClientSecret) {
		t.Fatalf("the clients file holds the secret itself, or is missing: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(h.dataDir, secrets.ClientsFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("clients file mode %v", fi.Mode().Perm())
	}

	introspect := func(header http.Header) (int, map[string]any) {
		return h.form("/oauth2/introspect", url.Values{"token": {s.Access}}, header)
	}
	// The running ledger picks the new client up within a second or so.
	poll.Until(t, 5*time.Second, func() error {
		if st, out := introspect(basic("orders-api", created.ClientSecret)); st != http.StatusOK || out["active"] != true {
			return fmt.Errorf("%d %v", st, out)
		}
		return nil
	})
	// The scheme in any case; the admin token as bearer still works.
	lower := basic("orders-api", created.ClientSecret)
	lower.Set("Authorization", "basic "+strings.TrimPrefix(lower.Get("Authorization"), "Basic "))
	for name, header := range map[string]http.Header{"basic in lower case": lower, "admin bearer": adminHeader} {
		if st, out := introspect(header); st != http.StatusOK || out["active"] != true {
			t.Fatalf("%s: %d %v", name, st, out)
		}
	}
	// Refusals: 401 invalid_client with a Basic challenge, and no echo.
	for name, header := range map[string]http.Header{
		"wrong secret":          basic("orders-api", created.ClientSecret+"x"),
		"unknown client":        basic("ZZecho-client", created.ClientSecret),
		"secret of another":     basic("billing", created.ClientSecret),
		"no credentials":        nil,
		"admin token as basic":  basic("admin", testAdminToken),
		"secret as bearer":      {"Authorization": {"Bearer " + created.ClientSecret}},
		"not base64":            {"Authorization": {"Basic %%%"}},
		"no colon":              {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("orders-api"))}},
		"refresh token, bearer": {"Authorization": {"Bearer " + s.Refresh}},
	} {
		resp := h.raw("POST", "/oauth2/introspect", "application/x-www-form-urlencoded", url.Values{"token": {s.Access}}.Encode(), header)
		if resp.status != http.StatusUnauthorized || !strings.Contains(resp.body, `"invalid_client"`) {
			t.Fatalf("%s: %d %s, want 401 invalid_client", name, resp.status, resp.body)
		}
		if strings.Contains(resp.body, "ZZecho") || strings.Contains(resp.body, created.ClientSecret) {
			t.Fatalf("%s: the answer echoes the input: %s", name, resp.body)
		}
	}
	req, _ := http.NewRequest("POST", h.url+"/oauth2/introspect", strings.NewReader("token=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := strings.Join(resp.Header.Values("WWW-Authenticate"), " | "); !strings.Contains(got, "Basic realm=") {
		t.Fatalf("WWW-Authenticate %q has no Basic challenge", got)
	}
	// An introspection client is not an admin.
	if st, _ := h.do("GET", "/v1/users/alice/sessions", "", "", basic("orders-api", created.ClientSecret)); st != http.StatusUnauthorized {
		t.Fatalf("an introspection client listed sessions: %d", st)
	}

	// Listing shows ids, never secrets; removal takes effect without a restart.
	stdout.Reset()
	if err := run(t.Context(), []string{"introspection-clients", "list", "--data-dir", h.dataDir}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "orders-api") || strings.Contains(stdout.String(), "slcs_") {
		t.Fatalf("list: %v %q", err, stdout.String())
	}
	if err := run(t.Context(), []string{"introspection-clients", "add", "--data-dir", h.dataDir, "orders-api"}, &stdout, &stderr); err == nil {
		t.Fatal("a second client of the same id was added")
	}
	if err := run(t.Context(), []string{"introspection-clients", "add", "--data-dir", h.dataDir, "has space"}, &stdout, &stderr); err == nil {
		t.Fatal("a client id with a space was added")
	}
	if err := run(t.Context(), []string{"introspection-clients", "remove", "--data-dir", h.dataDir, "orders-api"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if st, out := introspect(basic("orders-api", created.ClientSecret)); st != http.StatusUnauthorized {
			return fmt.Errorf("%d %v", st, out)
		}
		return nil
	})
}

type pollErr struct {
	status int
	body   map[string]any
}

func (e *pollErr) Error() string {
	return "status " + http.StatusText(e.status) + " " + mustJSONString(e.body)
}

func mustJSONString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestIntrospectionClientsFromTheEnvironment: instances without a shared
// data dir get the clients file's contents in
// SESSIONLEDGER_INTROSPECTION_CLIENTS, as they get keys in SESSIONLEDGER_KEYS.
func TestIntrospectionClientsFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	secret, err := secrets.AddClient(dir, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	contents, err := os.ReadFile(filepath.Join(dir, secrets.ClientsFile))
	if err != nil {
		t.Fatal(err)
	}
	env := string(contents)
	h := boot(t, "", func(c *Config) { c.IntrospectionClients = &env })
	s := h.issue(`{"user_id":"alice"}`)
	if st, out := h.form("/oauth2/introspect", url.Values{"token": {s.Access}}, basic("gateway", secret)); st != http.StatusOK || out["active"] != true {
		t.Fatalf("%d %v", st, out)
	}
	// A resource server is told nothing about a refresh token, which it is
	// never sent; the admin is.
	if st, out := h.form("/oauth2/introspect", url.Values{"token": {s.Refresh}}, basic("gateway", secret)); st != http.StatusOK || mustJSON(t, out) != `{"active":false}` {
		t.Fatalf("an introspection client learned of a refresh token: %d %v", st, out)
	}
	if !h.active(s.Refresh) {
		t.Fatal("the admin is told about refresh tokens")
	}
	bad := `{"clients":[{"client_id":"x","secret_sha256":"short"}]}`
	cfg := DefaultConfig()
	cfg.IntrospectionClients = &bad
	if _, err := introspectionClientSource(cfg); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_INTROSPECTION_CLIENTS") {
		t.Fatalf("a bad variable: %v", err)
	}
}

func TestBearerSchemeInAnyCase(t *testing.T) {
	h := boot(t, "", nil)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		for _, header := range []string{scheme + " " + testAdminToken, scheme + "   " + testAdminToken} {
			if st, out := h.do("GET", "/v1/users/alice/sessions", "", "", http.Header{"Authorization": {header}}); st != http.StatusOK {
				t.Fatalf("%q: %d %v", header[:len(scheme)+3], st, out)
			}
		}
	}
	for _, header := range []string{"Bearer", "Bearer ", "Bearer" + testAdminToken, "Token " + testAdminToken, "Bearer " + testAdminToken + " extra"} {
		if st, _ := h.do("GET", "/v1/users/alice/sessions", "", "", http.Header{"Authorization": {header}}); st != http.StatusUnauthorized {
			t.Fatalf("a malformed header was accepted: %d", st)
		}
	}
	// The verifier other services import reads the header the same way.
	for header, want := range map[string]bool{"bearer abc": true, "BEARER  abc": true, "Bearer": false, "Basic abc": false, "Bearer a b": false} {
		if _, ok := accesstoken.BearerToken(header); ok != want {
			t.Fatalf("BearerToken(%q) = %v", header, ok)
		}
	}
}

// TestOneWhitespaceRuleForTokens: a token with leading or trailing whitespace
// is refused with invalid_request on every endpoint that takes one, and
// changes nothing; the same token exactly as issued works everywhere.
func TestOneWhitespaceRuleForTokens(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	for _, pad := range []struct{ name, before, after string }{
		{"trailing newline", "", "\n"}, {"trailing CRLF", "", "\r\n"}, {"trailing space", "", " "},
		{"leading space", " ", ""}, {"leading tab", "\t", ""},
	} {
		for _, tok := range []struct{ name, value string }{{"refresh", s.Refresh}, {"access", s.Access}} {
			padded := pad.before + tok.value + pad.after
			for _, ep := range []struct {
				path   string
				values url.Values
				header http.Header
			}{
				{"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {padded}}, nil},
				{"/oauth2/revoke", url.Values{"token": {padded}}, nil},
				{"/oauth2/introspect", url.Values{"token": {padded}}, adminHeader},
			} {
				st, out := h.form(ep.path, ep.values, ep.header)
				if st != http.StatusBadRequest || out["error"] != "invalid_request" || !strings.Contains(out["error_description"].(string), "whitespace") {
					t.Fatalf("%s %s token with %s: %d %v, want 400 invalid_request naming the whitespace", ep.path, tok.name, pad.name, st, out)
				}
			}
		}
	}
	// Nothing above revoked or rotated the session: the exact token works.
	if !h.active(s.Access) || !h.active(s.Refresh) {
		t.Fatal("a padded token changed the session")
	}
	next := h.mustRefresh(s.Refresh)
	h.mustForm("/oauth2/revoke", url.Values{"token": {next.Refresh}}, nil, http.StatusOK)
	if h.active(next.Access) {
		t.Fatal("revoke with the exact token did not sign out")
	}
}

// TestJSONInputIsNeverRepaired: Go's decoder turns invalid UTF-8 and lone
// surrogate escapes into U+FFFD, which would merge different user ids into
// one; the ledger refuses them, as it refuses the same bytes in a path.
func TestJSONInputIsNeverRepaired(t *testing.T) {
	h := boot(t, "", nil)
	for name, body := range map[string]string{
		"invalid UTF-8 in user_id":         "{\"user_id\":\"al\xffice\"}",
		"invalid UTF-8 in device":          "{\"user_id\":\"alice\",\"device\":{\"name\":\"ph\xc3one\"}}",
		"invalid UTF-8 in claims":          "{\"user_id\":\"alice\",\"claims\":{\"team\":\"\xfe\"}}",
		"lone high surrogate":              `{"user_id":"al\ud800ice"}`,
		"lone low surrogate":               `{"user_id":"al\udc00ice"}`,
		"high surrogate, then not low":     `{"user_id":"\ud800\u0041"}`,
		"surrogate at the end of a string": `{"user_id":"alice\udbff"}`,
	} {
		st, out := h.admin("POST", "/v1/sessions", body)
		if st != http.StatusBadRequest || !strings.Contains(mustJSON(t, out), "UTF") && !strings.Contains(mustJSON(t, out), "surrogate") {
			t.Fatalf("%s: %d %v, want 400 naming the encoding", name, st, out)
		}
	}
	if got := h.userSessions("al\uFFFDice"); len(got) != 0 {
		t.Fatalf("a repaired user id got sessions: %v", got)
	}
	// A valid pair, escaped or not, is a character like any other.
	a := h.issue(`{"user_id":"emoji-\ud83d\ude00"}`)
	b := h.issue(`{"user_id":"emoji-😀"}`)
	if claimsOf(t, a.Access)["sub"] != "emoji-😀" || claimsOf(t, b.Access)["sub"] != "emoji-😀" {
		t.Fatal("a surrogate pair was not read as its character")
	}
	// A member named twice, or in another case, is not read as the last copy.
	for name, body := range map[string]string{
		"user_id twice":        `{"user_id":"alice","user_id":"bob"}`,
		"user_id in two cases": `{"user_id":"alice","USER_ID":"bob"}`,
		"device name twice":    `{"user_id":"alice","device":{"name":"a","Name":"b"}}`,
		"a claim named twice":  `{"user_id":"alice","claims":{"team":"a","team":"b"}}`,
		"nested claim twice":   `{"user_id":"alice","claims":{"org":{"id":1,"id":2}}}`,
		"claims in two cases":  `{"user_id":"alice","claims":{"a":1},"Claims":{"b":2}}`,
	} {
		st, out := h.admin("POST", "/v1/sessions", body)
		if st != http.StatusBadRequest || !strings.Contains(mustJSON(t, out), "twice") {
			t.Fatalf("%s: %d %v", name, st, out)
		}
	}
	// Claims keep their names: two that differ in case are two claims.
	c := claimsOf(t, h.issue(`{"user_id":"carol","claims":{"team":"a","Team":"b","list":[{"k":1},{"k":2}]}}`).Access)
	if c["team"] != "a" || c["Team"] != "b" {
		t.Fatalf("claims %v", c)
	}
	// A type error says which JSON was expected, not a Go type.
	st, out := h.admin("POST", "/v1/sessions", `{"user_id":"a","device":"phone"}`)
	if detail, _ := out["detail"].(string); st != http.StatusBadRequest || detail != `field "device" must be an object` {
		t.Fatalf("%d %v", st, out)
	}
	st, out = h.admin("POST", "/v1/sessions", `{"user_id":"a","device":{"ip":7}}`)
	if detail, _ := out["detail"].(string); st != http.StatusBadRequest || detail != `field "device.ip" must be a string` {
		t.Fatalf("%d %v", st, out)
	}
}

// TestSeparateAdminListener: with --admin-addr, the public port serves the
// OAuth endpoints, keys and health only; the admin API, /metrics and
// introspection with the admin token are on the admin port alone.
func TestSeparateAdminListener(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	if h.m.AdminURL() == h.m.HTTPURL() {
		t.Fatal("no admin listener")
	}
	admin := &ledgerHarness{t: t, url: h.m.AdminURL(), client: h.client}
	s := admin.issue(`{"user_id":"alice"}`)

	// Public: what clients and verifiers call; /readyz without the reason,
	// which is for operators, on the admin port.
	for _, path := range []string{"/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server"} {
		if st, _ := h.do("GET", path, "", "", nil); st != http.StatusOK {
			t.Fatalf("public %s: %d", path, st)
		}
	}
	next := h.mustRefresh(s.Refresh)
	h.wantGet("/readyz", http.StatusOK, `{"status":"ready"}`)
	admin.wantGet("/readyz", http.StatusOK, `{"status":"ready"}`)
	// Not public: the admin API and metrics, even with the admin token, and
	// introspection with the admin token.
	for _, path := range []string{"/v1/users/alice/sessions", "/metrics"} {
		if resp := h.raw("GET", path, "", "", adminHeader); resp.status != http.StatusNotFound {
			t.Fatalf("public %s: %d, want 404", path, resp.status)
		}
	}
	if st, _ := h.form("/oauth2/introspect", url.Values{"token": {next.Access}}, adminHeader); st != http.StatusUnauthorized {
		t.Fatalf("public introspection took the admin token: %d", st)
	}
	// Introspection clients work on the public port.
	secret, err := secrets.AddClient(h.dataDir, "edge")
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if st, out := h.form("/oauth2/introspect", url.Values{"token": {next.Access}}, basic("edge", secret)); st != http.StatusOK || out["active"] != true {
			return fmt.Errorf("%d %v", st, out)
		}
		return nil
	})
	// Admin port: the admin API, metrics, introspection with either.
	if !admin.active(next.Access) {
		t.Fatal("admin introspection")
	}
	if resp := admin.raw("GET", "/metrics", "", "", nil); resp.status != http.StatusOK || !strings.Contains(resp.body, "sessionledger_refreshes_total") {
		t.Fatalf("admin /metrics: %d", resp.status)
	}
	if st, _ := admin.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {next.Refresh}}, nil); st != http.StatusNotFound {
		t.Fatalf("admin port serves refreshes: %d", st)
	}
	admin.mustAdmin("DELETE", "/v1/users/alice/sessions", "", http.StatusNoContent)
	h.wantInvalidGrant(next.Refresh)

	cfg := DefaultConfig()
	cfg.AdminAddr = cfg.HTTPAddr
	if err := cfg.complete(); err == nil {
		t.Fatal("--admin-addr equal to --http-addr was accepted")
	}
}

// TestPublicReadyzKeepsTheReasonForTheAdminPort: beside an admin listener,
// the public /readyz says only that the ledger is not ready; why (here, the
// stream sequence of an event it cannot read) is for operators, on the
// admin port.
func TestPublicReadyzKeepsTheReasonForTheAdminPort(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	admin := &ledgerHarness{t: t, url: h.m.AdminURL(), client: h.client}
	data := []byte(`{"specversion":"1.0","id":"X","type":"session.teleported","source":"urn:sessionledger","subject":"s","time":"2026-01-01T00:00:00Z","userkey":"x","data":{}}`)
	msg := &nats.Msg{Subject: "ledger.x.y.teleported", Data: data, Header: nats.Header{integrity.TagHeader: {h.tagKeys().Tag(sha256.Sum256(data))}}}
	if _, err := h.insider().PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if st, body := admin.do("GET", "/readyz", "", "", nil); st != http.StatusServiceUnavailable || !strings.HasPrefix(fmt.Sprint(body["reason"]), "projection stopped: ") {
			return fmt.Errorf("admin /readyz %d %v", st, body)
		}
		return nil
	})
	h.wantGet("/readyz", http.StatusServiceUnavailable, `{"status":"not ready"}`)
}

// TestAdminTokenThatCannotBeSentIsRefused: a bearer token holds no
// whitespace, so an admin token with a space could never authenticate;
// serve says so at start instead of answering 401 to every call.
func TestAdminTokenThatCannotBeSentIsRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.AdminToken = "an admin token with spaces in it"
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	defer m.Close()
	if err := m.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "whitespace") {
		t.Fatalf("Run: %v", err)
	}
}
