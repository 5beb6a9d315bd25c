package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestNotReadyWhileReplaying starts a ledger on a stream of 30 000 events and
// asks at once: /readyz and the API answer 503 until the projection has caught
// up (a half-replayed projection would wrongly refuse genuine tokens), then 200.
func TestNotReadyWhileReplaying(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds a large stream")
	}
	dir := t.TempDir()
	seedStream(t, dir, 30_000)
	cfg := DefaultConfig()
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir, cfg.AdminToken, cfg.Issuer = "127.0.0.1:0", "", dir, testAdminToken, "http://ledger.test"
	cfg.SnapshotInterval = 0
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h := &ledgerHarness{t: t, m: m, url: m.HTTPURL(), client: &http.Client{Timeout: 10 * time.Second}}

	st, body := h.do("GET", "/readyz", "", "", nil)
	if st != http.StatusServiceUnavailable || !strings.HasPrefix(body["reason"].(string), "replaying: applied ") {
		t.Fatalf("/readyz right after start: %d %v", st, body)
	}
	if st, body := h.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, nil); st != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
		t.Fatalf("token endpoint while replaying: %d %v", st, body)
	}
	if st, _ := h.do("GET", "/healthz", "", "", nil); st != http.StatusOK {
		t.Fatalf("/healthz while replaying: %d", st)
	}
	h.waitReady()
	if st, _ := h.admin("GET", "/v1/users/user-7/sessions", ""); st != http.StatusOK {
		t.Fatalf("admin API once ready: %d", st)
	}
	if applied := m.follower.Projection().Applied(); applied < 30_000 {
		t.Fatalf("ready after applying %d of 30000 events", applied)
	}
}
