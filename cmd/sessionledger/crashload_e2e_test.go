package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/secrets"
)

var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

// buildNATSServer builds nats-server from the module this project depends on.
func buildNATSServer(t *testing.T) string {
	t.Helper()
	natsServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nats-server")
		if err != nil {
			natsServerErr = err
			return
		}
		natsServerBin = filepath.Join(dir, "nats-server")
		if out, err := exec.Command("go", "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
			natsServerErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

// natsProcess is nats-server running as a separate process.
type natsProcess struct {
	cmd  *exec.Cmd
	conf string
	url  string
}

func startNATS(t *testing.T, conf, url string) *natsProcess {
	t.Helper()
	cmd := exec.Command(buildNATSServer(t), "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	poll.For(t, 20*time.Second, func() bool {
		nc, err := nats.Connect(url)
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		_, err = js.AccountInfo(context.Background())
		return err == nil
	}, func() string { return "nats-server did not start" })
	return &natsProcess{cmd: cmd, conf: conf, url: url}
}

func (p *natsProcess) kill9(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// TestKill9UnderLoad kills the ledger, then nats-server (fsync on every write),
// with -9 while clients refresh, restarts each, and then requires that every
// refresh a client saw succeed is in the stream, that no session was rotated
// twice, and that every session refreshes with the newest token its client holds.
func TestKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and runs processes")
	}
	dir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", port, filepath.Join(dir, "js"))), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := startNATS(t, conf, natsURL)
	ledgerArgs := []string{"--nats-url", natsURL, "--data-dir", filepath.Join(dir, "ledger")}
	led := startLedger(t, ledgerArgs)
	var base atomic.Pointer[string]
	base.Store(&led.url)

	const clients = 8
	held := make([]session, clients)
	for i := range held {
		held[i] = led.harness(t).issue(fmt.Sprintf(`{"user_id":"crash-%d"}`, i))
	}
	load := startRefreshLoad(t, held, func(int) string { return *base.Load() })
	load.waitForMore(200)
	led.kill9(t) // the ledger, mid-refresh
	led = startLedger(t, ledgerArgs)
	base.Store(&led.url)
	load.waitForMore(200)
	ns.kill9(t)                 // nats-server, mid-append
	startNATS(t, conf, natsURL) // on the same store and port; the ledger reconnects
	load.waitForMore(200)
	results := load.finish()

	for _, r := range results {
		if r.status != http.StatusOK && r.status != http.StatusServiceUnavailable {
			t.Fatalf("a client saw status %d for session %s", r.status, r.session)
		}
	}
	keys, err := secrets.LoadOrCreate(filepath.Join(dir, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	feed, err := eventstore.NewFeed(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	if err := feed.Replay(context.Background(), nil, time.Time{}, nil, func(seq uint64, subject string, data []byte) error {
		msgs = append(msgs, &jetstream.RawStreamMsg{Sequence: seq, Subject: subject, Data: append([]byte(nil), data...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	checkRefreshesInStream(t, msgs, results, domain.TokenKeys{DigestKeyID: keys.DigestKeyID, DigestKey: keys.DigestKey, SuccessorKey: keys.SuccessorKey})
	h := led.harness(t)
	for i := range held {
		h.mustRefresh(held[i].Refresh)
	}
	t.Logf("%d refreshes succeeded across a kill -9 of the ledger and of nats-server; %d events in the stream", load.succeededAfter(time.Time{}), len(msgs))
}
