package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPortInUseIsReportedAtOnce starts a ledger whose HTTP address, then
// whose embedded NATS address, another program holds: each is refused within
// a few seconds (it took 30 s for the NATS address), naming the flag and the
// address, and what the failed start had bound is free again.
func TestPortInUseIsReportedAtOnce(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	held := busy.Addr().String()
	for _, tc := range []struct {
		name, flag string
		mutate     func(*Config, string)
	}{
		{"http", "--http-addr", func(c *Config, _ string) { c.HTTPAddr = held }},
		{"nats", "--nats-listen", func(c *Config, httpAddr string) { c.HTTPAddr, c.NATSListen = httpAddr, held }},
		{"admin", "--admin-addr", func(c *Config, httpAddr string) { c.HTTPAddr, c.AdminAddr = httpAddr, held }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			httpAddr := freeAddr(t)
			cfg := DefaultConfig()
			cfg.DataDir, cfg.AdminToken, cfg.Issuer = t.TempDir(), testAdminToken, "http://ledger.test"
			tc.mutate(&cfg, httpAddr)
			if err := cfg.complete(); err != nil {
				t.Fatal(err)
			}
			m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			start := time.Now()
			err := m.Run(context.Background())
			took := time.Since(start)
			m.Close()
			if err == nil {
				t.Fatalf("started with %s %s in use", tc.flag, held)
			}
			if want := tc.flag + " " + held + " is in use"; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q, want it to say %q", err, want)
			}
			if took > 5*time.Second {
				t.Fatalf("reported after %v, want within a few seconds", took)
			}
			t.Logf("%v after %v", err, took.Round(time.Millisecond))
			if tc.name == "nats" {
				ln, err := net.Listen("tcp", httpAddr)
				if err != nil {
					t.Fatalf("the failed start still holds its HTTP address: %v", err)
				}
				ln.Close()
			}
		})
	}
}
