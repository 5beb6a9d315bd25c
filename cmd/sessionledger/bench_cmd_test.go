package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func TestBenchCommand(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"bench", "--clients", "4", "--sessions", "2", "--duration", "300ms", "--json", "--signing-alg", "ES256"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Issued         int            `json:"issued"`
		Refreshes      int            `json:"refreshes"`
		RefreshPerSec  float64        `json:"refresh_per_sec"`
		LatencyMS      map[string]any `json:"latency_ms"`
		Errors         map[string]int `json:"errors_by_status"`
		AppendPerSec   float64        `json:"bare_append_per_sec"`
		HandlerPerSec  float64        `json:"empty_handler_per_sec"`
		RatioToAppend  float64        `json:"refresh_to_append"`
		RatioToHandler float64        `json:"refresh_to_empty_handler"`
		SigningAlg     string         `json:"signing_alg"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if r.Issued != 8 || r.Refreshes == 0 || len(r.Errors) != 0 || r.AppendPerSec <= 0 || r.HandlerPerSec <= 0 ||
		r.RatioToAppend <= 0 || r.RatioToHandler <= 0 || r.LatencyMS["p99"] == nil || r.SigningAlg != "ES256" {
		t.Fatalf("bench result %+v", r)
	}
}

func TestNATSSyncSetting(t *testing.T) {
	for _, v := range []string{"always", "1s"} {
		h := boot(t, "", func(c *Config) { c.NATSSync = v })
		h.mustRefresh(h.issue(`{"user_id":"a"}`).Refresh)
	}
	cfg := DefaultConfig()
	cfg.DataDir, cfg.NATSListen, cfg.HTTPAddr, cfg.AdminToken, cfg.NATSSync = t.TempDir(), "", "127.0.0.1:0", testAdminToken, "sometimes"
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, nil)
	m.Logger = newLogger(io.Discard, 0)
	err := m.Run(context.Background())
	m.Close()
	if err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Fatalf("--nats-sync sometimes: %v", err)
	}
}
