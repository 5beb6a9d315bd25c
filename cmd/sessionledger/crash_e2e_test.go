package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
)

// TestMain lets a test start this binary's main as a child process: with
// SESSIONLEDGER_TEST_RUN_MAIN set, the test binary runs sessionledger with the
// arguments in SESSIONLEDGER_TEST_ARGS (separated by newlines) instead of tests.
func TestMain(m *testing.M) {
	if os.Getenv("SESSIONLEDGER_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"sessionledger"}, strings.Split(os.Getenv("SESSIONLEDGER_TEST_ARGS"), "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// process is sessionledger running as a child process.
type process struct {
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
}

// startProcess runs "sessionledger serve" on dataDir with embedded NATS and
// waits until it is ready.
func startProcess(t *testing.T, dataDir string, env ...string) *process {
	t.Helper()
	return startLedger(t, []string{"--nats-listen", "", "--data-dir", dataDir}, env...)
}

// startLedger runs "sessionledger serve" with extra flags and waits until it is ready.
func startLedger(t *testing.T, extra []string, env ...string) *process {
	t.Helper()
	if env == nil {
		env = []string{"SESSIONLEDGER_ADMIN_TOKEN=" + testAdminToken}
	}
	args := append([]string{"serve", "--http-addr", "127.0.0.1:0", "--issuer", "http://ledger.test"}, extra...)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		"SESSIONLEDGER_TEST_RUN_MAIN=1",
		"SESSIONLEDGER_TEST_ARGS="+strings.Join(args, "\n"),
	)
	cmd.Env = append(cmd.Env, env...)
	p := &process{cmd: cmd, logs: &syncBuffer{}}
	cmd.Stderr = p.logs // Wait returns only after everything written is copied
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	poll.For(t, 30*time.Second, func() bool {
		for _, line := range strings.Split(p.logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "sessionledger listening" {
				p.url = "http://" + rec.Addr
				return true
			}
		}
		return false
	}, func() string { return "sessionledger did not start; log:\n" + p.logs.String() })
	h := &ledgerHarness{t: t, url: p.url, client: &http.Client{Timeout: 10 * time.Second}}
	h.waitReady()
	return p
}

func (p *process) harness(t *testing.T) *ledgerHarness {
	return &ledgerHarness{t: t, url: p.url, client: &http.Client{Timeout: 10 * time.Second}}
}

// kill9 kills the process with SIGKILL: no shutdown code runs.
func (p *process) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

func TestKill9KeepsEveryAcknowledgedAction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	p := startProcess(t, dir)
	h := p.harness(t)

	a0 := h.issue(`{"user_id":"alice"}`)
	a1 := h.mustRefresh(a0.Refresh)
	a2 := h.mustRefresh(a1.Refresh) // the newest token alice's client holds
	b := h.issue(`{"user_id":"bob"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+b.ID, "", http.StatusNoContent)
	c0 := h.issue(`{"user_id":"carol"}`)
	c1 := h.mustRefresh(c0.Refresh)
	h.mustAdmin("POST", "/v1/users/dave/deactivate", "", http.StatusNoContent)
	// Many sessions right before the kill, so some acks are very recent.
	var recent []session
	for i := 0; i < 50; i++ {
		recent = append(recent, h.mustRefresh(h.issue(fmt.Sprintf(`{"user_id":"u%d"}`, i)).Refresh))
	}
	p.kill9(t)

	p2 := startProcess(t, dir)
	h2 := p2.harness(t)
	h2.wantInvalidGrant(b.Refresh) // revoked stays revoked
	for i, s := range recent {
		if st, body := h2.refresh(s.Refresh); st != http.StatusOK {
			t.Fatalf("session %d issued and refreshed just before the kill: %d %v", i, st, body)
		}
	}
	if st, _ := h2.admin("POST", "/v1/sessions", `{"user_id":"dave"}`); st != http.StatusConflict {
		t.Fatalf("deactivation lost: issue to dave got %d", st)
	}
	h2.mustRefresh(c1.Refresh)      // newest token works
	h2.wantInvalidGrant(a0.Refresh) // rotated out two generations ago: reuse
	h2.wantInvalidGrant(a2.Refresh) // and reuse revoked the family
	types := h2.history(a0.ID)
	if types[len(types)-2] != "session.reused" || types[len(types)-1] != "session.revoked" {
		t.Fatalf("history after reuse: %v", types)
	}
	if strings.Contains(p.logs.String()+p2.logs.String(), testAdminToken) {
		t.Fatal("the admin token is in the log")
	}
}

func TestSIGTERMShutsDownGracefullyAndAdminTokenIsGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	p := startProcess(t, dir, "SESSIONLEDGER_LOG_LEVEL=info")
	token, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(token))
	h := p.harness(t)
	st, _ := h.do("GET", "/v1/users/x/sessions", "", "", http.Header{"Authorization": {"Bearer " + tok}})
	if st != http.StatusOK {
		t.Fatalf("generated admin token refused: %d", st)
	}
	if !strings.Contains(p.logs.String(), filepath.Join(dir, "admin-token")) || strings.Contains(p.logs.String(), tok) {
		t.Fatal("the log must name the admin token's path and never its value")
	}
	h.client.CloseIdleConnections() // an idle connection would hold up the graceful shutdown
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	if !strings.Contains(p.logs.String(), "shutting down") {
		t.Fatalf("log:\n%s", p.logs.String())
	}
}
