package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseServeFlags(t *testing.T) {
	env := map[string]string{
		"SESSIONLEDGER_HTTP_ADDR":   ":9000",
		"SESSIONLEDGER_DATA_DIR":    "/var/lib/ledger",
		"SESSIONLEDGER_REUSE_GRACE": "3s",
		"SESSIONLEDGER_ADMIN_TOKEN": "from-env-admin-token",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := parseServeFlags([]string{"--data-dir", "/tmp/x"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":9000" || cfg.DataDir != "/tmp/x" || cfg.ReuseGrace != 3*time.Second || cfg.AdminToken != "from-env-admin-token" {
		t.Fatalf("config %+v: env gives defaults, flags win", cfg)
	}
	if cfg.Issuer != "http://localhost:9000" || cfg.Audience != cfg.Issuer || cfg.NATSListen != "127.0.0.1:4222" {
		t.Fatalf("derived defaults %+v", cfg)
	}
	// The request budget: 5 s by default, at most half the grace window.
	if cfg.RequestTimeout != 1500*time.Millisecond {
		t.Fatalf("request timeout with a 3 s grace window: %v, want half of it", cfg.RequestTimeout)
	}
	none := func(string) (string, bool) { return "", false }
	for args, want := range map[string]time.Duration{"": 5 * time.Second, "--reuse-grace=0": 5 * time.Second, "--request-timeout=2s": 2 * time.Second, "--reuse-grace=1m --request-timeout=30s": 30 * time.Second} {
		cfg, err := parseServeFlags(strings.Fields(args), none, io.Discard)
		if err != nil || cfg.RequestTimeout != want {
			t.Errorf("%q: request timeout %v (%v), want %v", args, cfg.RequestTimeout, err, want)
		}
	}
	for _, bad := range [][]string{{"--request-timeout", "6s"}, {"--request-timeout", "-1s"}, {"--reuse-grace", "-1s"}, {"--replicas", "0"}, {"--http-addr", "nonsense"}, {"extra"}, {"--no-such-flag"}} {
		if _, err := parseServeFlags(bad, func(string) (string, bool) { return "", false }, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	env["SESSIONLEDGER_REPLICAS"] = "three"
	if _, err := parseServeFlags(nil, lookup, io.Discard); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_REPLICAS") {
		t.Errorf("bad env value: %v", err)
	}
}

func TestRunUnknownCommand(t *testing.T) {
	if err := run(t.Context(), []string{"launch"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
	if err := run(t.Context(), nil, io.Discard, io.Discard); err == nil {
		t.Fatal("no command accepted")
	}
}
