package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"
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
		m.Close()
		t.Fatal(err)
	}
	h := &ledgerHarness{t: t, m: m, url: m.HTTPURL(), client: &http.Client{Timeout: 10 * time.Second}}
	t.Cleanup(h.close)

	st, body := h.do("GET", "/readyz", "", "", nil)
	if reason, _ := body["reason"].(string); st != http.StatusServiceUnavailable || body["status"] != "not ready" || !strings.HasPrefix(reason, "replaying: applied ") {
		t.Fatalf("/readyz right after start: %d %v", st, body)
	}
	st, body = h.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, nil)
	if st != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" || body["error_description"] != "the ledger is starting" {
		t.Fatalf("token endpoint while replaying: %d %v", st, body)
	}
	h.wantGet("/healthz", http.StatusOK, `{"status":"ok"}`) // alive while replaying
	h.waitReady()
	h.wantGet("/readyz", http.StatusOK, `{"status":"ready"}`)
	h.wantGet("/healthz", http.StatusOK, `{"status":"ok"}`)
	h.mustAdmin("GET", "/v1/users/user-7/sessions", "", http.StatusOK)
	if applied := m.follower.Projection().Applied(); applied < 30_000 {
		t.Fatalf("ready after applying %d of 30000 events", applied)
	}
}

// TestUndecodableEventStopsTheLedger puts an event the ledger tagged but this
// version cannot decode (as a newer version would write) into the stream of a
// running ledger: its projection stops, and /readyz, the OAuth
// endpoints and the admin API answer 503 saying the ledger has stopped and an
// operator must act (not that it is starting), while /healthz still says the
// process is up; nothing more is recorded.
func TestUndecodableEventStopsTheLedger(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	h.wantGet("/readyz", http.StatusOK, `{"status":"ready"}`)
	h.wantGet("/healthz", http.StatusOK, `{"status":"ok"}`)

	data := []byte(`{"specversion":"1.0","id":"X","type":"session.teleported","source":"urn:sessionledger","subject":"s","time":"2026-01-01T00:00:00Z","userkey":"x","data":{}}`)
	msg := &nats.Msg{Subject: "ledger.x.y.teleported", Data: data, Header: nats.Header{integrity.TagHeader: {h.tagKeys().Tag(sha256.Sum256(data))}}}
	ack, err := h.insider().PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		st, body := h.do("GET", "/readyz", "", "", nil)
		if reason, _ := body["reason"].(string); st != http.StatusServiceUnavailable || body["status"] != "not ready" ||
			!strings.HasPrefix(reason, "projection stopped: ") || !strings.Contains(reason, fmt.Sprintf("sequence %d: undecodable event", ack.Sequence)) {
			return fmt.Errorf("/readyz answers %d %v, want 503 naming the projection stopped at sequence %d", st, body, ack.Sequence)
		}
		return nil
	})
	h.wantGet("/healthz", http.StatusOK, `{"status":"ok"}`)

	const stopped = "the ledger has stopped: its projection met an event it cannot read; an operator must act"
	for _, req := range []struct {
		path   string
		values url.Values
		header http.Header
	}{
		{"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.Refresh}}, nil},
		{"/oauth2/revoke", url.Values{"token": {s.Refresh}}, nil},
		{"/oauth2/introspect", url.Values{"token": {s.Refresh}}, adminHeader},
	} {
		if st, body := h.form(req.path, req.values, req.header); st != http.StatusServiceUnavailable ||
			body["error"] != "temporarily_unavailable" || body["error_description"] != stopped {
			t.Errorf("POST %s: %d %v, want 503 temporarily_unavailable %q", req.path, st, body, stopped)
		}
	}
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/v1/users/alice/sessions", ""},
		{"POST", "/v1/sessions", `{"user_id":"bob"}`},
		{"DELETE", "/v1/sessions/" + s.ID, ""},
	} {
		ct := ""
		if req.body != "" {
			ct = "application/json"
		}
		resp := h.raw(req.method, req.path, ct, req.body, adminHeader)
		var p map[string]any
		if err := json.Unmarshal([]byte(resp.body), &p); err != nil || resp.status != http.StatusServiceUnavailable ||
			resp.contentType != "application/problem+json" || p["status"] != 503.0 || p["detail"] != stopped {
			t.Errorf("%s %s: %d %q %s, want 503 application/problem+json saying %q", req.method, req.path, resp.status, resp.contentType, resp.body, stopped)
		}
	}
	if last := h.lastSeq(); last != ack.Sequence {
		t.Fatalf("a stopped ledger recorded %d events after the undecodable one", last-ack.Sequence)
	}
	want := fmt.Sprintf(`"msg":"projection stopped: an event the ledger wrote that this version cannot decode; upgrade this instance","applied_seq":%d`, ack.Sequence-1)
	if !strings.Contains(h.logs.String(), want) {
		t.Fatalf("no log line %s:\n%s", want, h.logs.String())
	}
}
