package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/secrets"
)

const testAdminToken = "test-admin-token-0123456789abcdef"

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testClock is a clock the test moves. Booted with Config.Now set to its Now,
// a ledger decides expiry and the grace window, and stamps its events, by it:
// a test advances it instead of sleeping until a deadline passes. It starts
// at the real time and moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock d forward and returns the new time.
func (c *testClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// ledgerHarness is a whole ledger (Main) running on port 0 with embedded NATS.
type ledgerHarness struct {
	t       testing.TB
	m       *Main
	url     string
	dataDir string
	logs    *syncBuffer
	client  *http.Client
}

// boot starts a ledger on dataDir (a fresh one when empty). mutate may change
// the configuration first.
func boot(t testing.TB, dataDir string, mutate func(*Config)) *ledgerHarness {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:-1"
	cfg.DataDir = dataDir
	cfg.AdminToken = testAdminToken
	cfg.Issuer = "http://ledger.test"
	// Checkpoints interleave with events at their own pace; tests that count
	// sequences would have to step around them. The tests of checkpoints,
	// of attacks and of clusters turn them on.
	cfg.CheckpointInterval = 0
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	m := NewMain(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("Run: %v", err)
	}
	h := &ledgerHarness{t: t, m: m, url: m.HTTPURL(), dataDir: dataDir, logs: logs, client: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(h.close)
	h.waitReady()
	return h
}

// close shuts the ledger down. The clients' idle connections go first: a
// connection the server has accepted but that never carried a request would
// hold http.Server.Shutdown for five seconds.
func (h *ledgerHarness) close() {
	h.client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	if h.m != nil {
		h.m.Close()
	}
}

// waitReady waits until the ledger is ready: its Main says so, or, for a
// ledger in another process, /readyz answers 200.
func (h *ledgerHarness) waitReady() {
	h.t.Helper()
	if h.m == nil {
		poll.Until(h.t, 20*time.Second, func() error {
			if st, body := h.do("GET", "/readyz", "", "", nil); st != http.StatusOK {
				return fmt.Errorf("/readyz answers %d %v", st, body)
			}
			return nil
		})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.m.WaitReady(ctx); err != nil {
		h.t.Fatalf("ledger never became ready: %v", err)
	}
	if st, body := h.do("GET", "/readyz", "", "", nil); st != http.StatusOK {
		h.t.Fatalf("ready, but /readyz answers %d %v", st, body)
	}
}

// rawResponse is an answer as sent.
type rawResponse struct {
	status      int
	contentType string
	body        string // trimmed of surrounding white space
	header      http.Header
}

// raw sends a request and returns the answer as sent.
func (h *ledgerHarness) raw(method, path, contentType, body string, header http.Header) rawResponse {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: status %d, reading the body: %v", method, path, resp.StatusCode, err)
	}
	return rawResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: string(bytes.TrimSpace(got)), header: resp.Header}
}

// do sends a request and returns the status and the decoded JSON body (nil if none).
func (h *ledgerHarness) do(method, path, contentType, body string, header http.Header) (int, map[string]any) {
	h.t.Helper()
	resp := h.raw(method, path, contentType, body, header)
	var out map[string]any
	if resp.body != "" {
		if err := json.Unmarshal([]byte(resp.body), &out); err != nil {
			h.t.Fatalf("%s %s: status %d, body is not JSON: %q", method, path, resp.status, resp.body)
		}
	}
	return resp.status, out
}

// wantGet requires that GET path, without credentials, answers status with
// a JSON body of exactly want.
func (h *ledgerHarness) wantGet(path string, status int, want string) {
	h.t.Helper()
	resp := h.raw("GET", path, "", "", nil)
	if resp.status != status || resp.contentType != "application/json" || resp.body != want {
		h.t.Fatalf("GET %s: %d %q %s, want %d application/json %s", path, resp.status, resp.contentType, resp.body, status, want)
	}
}

var adminHeader = http.Header{"Authorization": {"Bearer " + testAdminToken}}

// admin sends an admin request with a JSON body.
func (h *ledgerHarness) admin(method, path, body string) (int, map[string]any) {
	h.t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return h.do(method, path, ct, body, adminHeader)
}

// mustAdmin sends an admin request, fails the test unless it answers want,
// and returns the decoded body.
func (h *ledgerHarness) mustAdmin(method, path, body string, want int) map[string]any {
	h.t.Helper()
	st, out := h.admin(method, path, body)
	if st != want {
		h.t.Fatalf("%s %s: status %d %v, want %d", method, path, st, out, want)
	}
	return out
}

// form posts form values.
func (h *ledgerHarness) form(path string, values url.Values, header http.Header) (int, map[string]any) {
	h.t.Helper()
	return h.do("POST", path, "application/x-www-form-urlencoded", values.Encode(), header)
}

// mustForm posts form values, fails the test unless the answer is want, and
// returns the decoded body.
func (h *ledgerHarness) mustForm(path string, values url.Values, header http.Header, want int) map[string]any {
	h.t.Helper()
	st, out := h.form(path, values, header)
	if st != want {
		h.t.Fatalf("POST %s: status %d %v, want %d", path, st, out, want)
	}
	return out
}

// userSessions lists a user's live sessions (GET /v1/users/{id}/sessions, 200).
func (h *ledgerHarness) userSessions(user string) []map[string]any {
	h.t.Helper()
	out := h.mustAdmin("GET", "/v1/users/"+user+"/sessions", "", http.StatusOK)
	list, ok := out["sessions"].([]any)
	if !ok {
		h.t.Fatalf("sessions of %s: %v", user, out)
	}
	var sessions []map[string]any
	for _, s := range list {
		sessions = append(sessions, s.(map[string]any))
	}
	return sessions
}

// session is what POST /v1/sessions and POST /oauth2/token return.
type session struct {
	ID, Access, Refresh string
	ExpiresIn           float64
}

func toSession(body map[string]any) session {
	s := session{}
	s.ID, _ = body["session_id"].(string)
	s.Access, _ = body["access_token"].(string)
	s.Refresh, _ = body["refresh_token"].(string)
	s.ExpiresIn, _ = body["expires_in"].(float64)
	return s
}

func (h *ledgerHarness) issue(body string) session {
	h.t.Helper()
	st, out := h.admin("POST", "/v1/sessions", body)
	if st != http.StatusCreated {
		h.t.Fatalf("issue %s: status %d %v", body, st, out)
	}
	return toSession(out)
}

// refresh posts a refresh_token grant.
func (h *ledgerHarness) refresh(rt string) (int, map[string]any) {
	h.t.Helper()
	return h.form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, nil)
}

func (h *ledgerHarness) mustRefresh(rt string) session {
	h.t.Helper()
	st, out := h.refresh(rt)
	if st != http.StatusOK {
		h.t.Fatalf("refresh: status %d %v", st, out)
	}
	return toSession(out)
}

func (h *ledgerHarness) wantInvalidGrant(rt string) {
	h.t.Helper()
	st, out := h.refresh(rt)
	if st != http.StatusBadRequest || out["error"] != "invalid_grant" {
		h.t.Fatalf("refresh: status %d %v, want 400 invalid_grant", st, out)
	}
}

// introspect returns whether a token is active.
func (h *ledgerHarness) active(token string) bool {
	h.t.Helper()
	st, out := h.form("/oauth2/introspect", url.Values{"token": {token}}, adminHeader)
	if st != http.StatusOK {
		h.t.Fatalf("introspect: status %d %v", st, out)
	}
	return out["active"] == true
}

// history returns the types of a session's events.
func (h *ledgerHarness) history(sid string) []string {
	h.t.Helper()
	st, out := h.admin("GET", "/v1/sessions/"+sid+"/events", "")
	if st != http.StatusOK {
		h.t.Fatalf("history: status %d %v", st, out)
	}
	var types []string
	for _, e := range out["events"].([]any) {
		types = append(types, e.(map[string]any)["type"].(string))
	}
	return types
}

// nats connects to the ledger's embedded NATS like another service would.
func (h *ledgerHarness) nats() *nats.Conn {
	h.t.Helper()
	nc, err := nats.Connect(h.m.NATSURL())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(nc.Close)
	return nc
}

// insider connects to the ledger's embedded NATS with the ledger's own
// credentials: what an attacker who stole them, or an operator, could do.
func (h *ledgerHarness) insider() jetstream.JetStream {
	h.t.Helper()
	js, err := jetstream.New(h.insiderConn())
	if err != nil {
		h.t.Fatal(err)
	}
	return js
}

// insiderConn is insider's NATS connection.
func (h *ledgerHarness) insiderConn() *nats.Conn {
	h.t.Helper()
	conn, err := h.m.embedded.Connect()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn.NATS()
}

// tagKeys are the ledger's event tag keys, from its data dir.
func (h *ledgerHarness) tagKeys() *integrity.TagKeys {
	h.t.Helper()
	keys, err := secrets.LoadOrCreate(h.dataDir)
	if err != nil {
		h.t.Fatal(err)
	}
	tk, err := integrity.NewTagKeys(keys.TagKeyID, map[string][]byte{keys.TagKeyID: keys.TagKey})
	if err != nil {
		h.t.Fatal(err)
	}
	return tk
}

// streamMessages returns every message in the stream (read as any reader
// may), checkpoints included.
func (h *ledgerHarness) streamMessages() []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx := context.Background()
	js, err := jetstream.NewWithAPIPrefix(h.nats(), eventstore.ReaderAPIPrefix)
	if err != nil {
		h.t.Fatal(err)
	}
	s, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatalf("get %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// lastSeq is the stream's last sequence.
func (h *ledgerHarness) lastSeq() uint64 {
	h.t.Helper()
	seq, err := h.m.store.LastSeq(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return seq
}

// snapshotSeq is the sequence the stored snapshot covers (0: none).
func (m *Main) snapshotSeq(tb testing.TB) uint64 {
	tb.Helper()
	snaps, err := m.store.Snapshots(context.Background(), eventstore.Config{Replicas: m.Config.Replicas})
	if err != nil {
		tb.Fatal(err)
	}
	seq, err := snaps.LatestSeq(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return seq
}

// eventTypes lists the types of the events in the stream, oldest first.
func (h *ledgerHarness) eventTypes() []string {
	var types []string
	for _, m := range h.streamMessages() {
		if m.Subject == integrity.CheckpointSubject {
			continue
		}
		var env struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(m.Data, &env)
		types = append(types, env.Type)
	}
	return types
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}
