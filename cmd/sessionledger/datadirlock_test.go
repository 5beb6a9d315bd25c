package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/natstest"
)

// runMainOn runs Main on dataDir with the embedded NATS and returns Run's
// error and how long it took; the Main is closed unless it runs.
func runMainOn(t *testing.T, dataDir string) (*Main, time.Duration, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir, cfg.AdminToken, cfg.Issuer = "127.0.0.1:0", "127.0.0.1:-1", dataDir, testAdminToken, "http://ledger.test"
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	start := time.Now()
	err := m.Run(context.Background())
	took := time.Since(start)
	if err != nil {
		m.Close()
		return nil, took, err
	}
	return m, took, nil
}

// TestSecondServeOnADataDirIsRefused: with the embedded NATS, a second ledger
// on a data dir in use is refused at once and told who holds it; once the
// holder has stopped, a ledger starts on the dir again.
func TestSecondServeOnADataDirIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first := boot(t, dir, nil)
	lockPath := filepath.Join(dir, dataDirLockFile)
	var rec dataDirHolder
	b, err := os.ReadFile(lockPath)
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.PID != os.Getpid() || rec.HTTP != strings.TrimPrefix(first.url, "http://") || rec.Since.IsZero() {
		t.Fatalf("the lock file says %q (%v), want this process's pid %d, its HTTP address %s and when", b, err, os.Getpid(), first.url)
	}

	second, took, err := runMainOn(t, dir)
	if err == nil {
		second.Close()
		t.Fatal("a second ledger started on a data dir in use")
	}
	host, _ := os.Hostname()
	for _, want := range []string{"data dir " + dir + " is in use by another sessionledger serve", fmt.Sprintf("pid %d on host %s", os.Getpid(), host), "http " + rec.HTTP, "--data-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q, want it to say %q", err, want)
		}
	}
	if took > 5*time.Second {
		t.Errorf("refused after %v, want at once", took)
	}
	t.Logf("%v (after %v)", err, took.Round(time.Millisecond))

	first.close()
	if b, err := os.ReadFile(lockPath); err != nil || len(b) != 0 {
		t.Fatalf("after Close the lock file holds %q (%v), want it empty", b, err)
	}
	third, _, err := runMainOn(t, dir)
	if err != nil {
		t.Fatalf("after the holder closed: %v", err)
	}
	third.Close()
}

// TestKilledHolderFreesTheDataDir runs serve as processes: a second on the
// dir exits at once naming the first's pid; after kill -9 of the first (no
// shutdown code runs), a new one starts on the dir.
func TestKilledHolderFreesTheDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	first := startProcess(t, dir)
	start := time.Now()
	status, out := runMain(t, []string{"SESSIONLEDGER_ADMIN_TOKEN=" + testAdminToken},
		"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-listen", "", "--issuer", "http://ledger.test")
	took := time.Since(start)
	if status != 2 || !strings.Contains(out, fmt.Sprintf("is in use by another sessionledger serve (pid %d ", first.cmd.Process.Pid)) {
		t.Fatalf("second serve on the dir: exit status %d, output:\n%s\nwant status 2 and the holder's pid %d", status, out, first.cmd.Process.Pid)
	}
	if took > 5*time.Second {
		t.Fatalf("the second serve took %v to give up", took)
	}
	first.kill9(t)
	third := startProcess(t, dir)
	third.harness(t).issue(`{"user_id":"alice"}`)
}

// TestInstancesOnAnExternalNATSShareADataDir: with --nats-url the data dir
// holds only keys, which instances share (docker-compose.yml does), so it is
// not locked.
func TestInstancesOnAnExternalNATSShareADataDir(t *testing.T) {
	srv := natstest.StartAccounts(t)
	dir := t.TempDir()
	external := func(c *Config) { c.NATSURL, c.NATSAuth = srv.ClientURL(), natstest.LedgerAuth }
	a := boot(t, dir, external)
	b := boot(t, dir, external)
	b.mustRefresh(a.issue(`{"user_id":"alice"}`).Refresh)
	if _, err := os.Stat(filepath.Join(dir, dataDirLockFile)); err == nil {
		t.Fatal("a ledger on an external NATS locked the data dir")
	}
}
