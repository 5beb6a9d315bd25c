package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLoginOnlyFromTheDemoPage: /login, which spends the admin token,
// answers the demo's own page only: not another site's, and not a page of
// a rebound DNS name that reaches the same port.
func TestLoginOnlyFromTheDemoPage(t *testing.T) {
	d := &demo{origin: "http://localhost:3000", ledgerURL: "http://localhost:1", client: http.DefaultClient, log: slog.New(slog.DiscardHandler),
		adminToken: func() (string, error) { t.Fatal("the admin token was read for a refused request"); return "", nil }}
	for _, tc := range []struct{ name, host, origin string }{
		{"another site", "localhost:3000", "https://evil.example"},
		{"no Origin", "localhost:3000", ""},
		{"DNS rebinding", "rebind.evil.example:3000", "http://rebind.evil.example:3000"},
		{"the right Origin through a rebound name", "rebind.evil.example:3000", "http://localhost:3000"},
	} {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(`{"user":"alice"}`))
		req.Host = tc.host
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		rec := httptest.NewRecorder()
		d.routes().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s: %d %s", tc.name, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	d.routes().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}
