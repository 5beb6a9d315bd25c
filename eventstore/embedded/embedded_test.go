package embedded

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A start nats-server gives up on is reported at once, with its reason,
// instead of after the 30 s readiness timeout.
func TestStartReportsAFailedStartAtOnce(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"port in use":        {Config{StoreDir: t.TempDir(), Listen: addr}, addr},
		"store not a folder": {Config{StoreDir: notADir}, "JetStream"},
	} {
		start := time.Now()
		e, err := Start(tc.cfg)
		took := time.Since(start)
		if err == nil {
			e.Shutdown()
			t.Fatalf("%s: started", name)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to mention %q", name, err, tc.want)
		}
		if took > 5*time.Second {
			t.Errorf("%s: reported after %v, want at once", name, took)
		}
		t.Logf("%s: %v after %v", name, err, took.Round(time.Millisecond))
	}
}

func TestStartListensAndConnects(t *testing.T) {
	e, err := Start(Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if !strings.HasPrefix(e.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("client URL %q", e.ClientURL())
	}
	conn, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	conn.NATS().Close()
}

// Port 0 is a free port, as for every listener here; nats-server alone
// would read it as its default, 4222, open to readers on a well-known port.
func TestPortZeroIsAFreePort(t *testing.T) {
	e, err := Start(Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if url := e.ClientURL(); url == "" || strings.HasSuffix(url, ":4222") || strings.HasSuffix(url, ":0") {
		t.Fatalf("listening on %q", url)
	}
}
