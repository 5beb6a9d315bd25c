package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSSFAndWebhooksWithOutsideLibraries runs interop/ssf-webhooks.mjs
// against a ledger: the official Standard Webhooks library (npm
// standardwebhooks) verifies a webhook and refuses it tampered or under
// another secret; jose verifies the pushed and the polled Security Event
// Token against the jwks_uri of the transmitter's metadata, with typ
// secevent+jwt and RS256 pinned, and refuses one with a changed payload.
// The script is the receiver itself, on loopback.
func TestSSFAndWebhooksWithOutsideLibraries(t *testing.T) {
	node, dir := nodeInterop(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := boot(t, "", func(c *Config) {
		c.HTTPAddr, c.Issuer, c.DeliveryAllowLoopback = addr, "http://"+addr, true
	})
	cmd := exec.Command(node, "ssf-webhooks.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LEDGER_ISSUER="+h.url, "ADMIN_TOKEN="+testAdminToken)
	out, err := cmd.CombinedOutput()
	t.Logf("node ssf-webhooks.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("an outside library refused what the ledger sent: %v", err)
	}
	if n := strings.Count(string(out), "ok: "); n != 16 {
		t.Fatalf("%d checks passed, want 16", n)
	}
}
