package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/secrets"
)

// TestStandardClientsInNode runs interop/standard-clients.mjs: oauth4webapi
// validates an access token by RFC 9068 (which needs the client_id claim),
// refreshes, introspects with client_secret_basic and revokes; jose verifies
// the token against the JWKS. Libraries nobody here wrote, in another
// language. It needs Node.js 20+ and npm (CI has them: it lints the OpenAPI
// document with npx); the first run installs the pinned packages
// (interop/package-lock.json) with npm ci.
func TestStandardClientsInNode(t *testing.T) {
	node, dir := nodeInterop(t)
	// The issuer is the ledger's own URL, as discovery requires
	// (RFC 8414 §3.3), so the port is chosen first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := boot(t, "", func(c *Config) { c.HTTPAddr = addr; c.Issuer = "http://" + addr })
	s := h.issue(`{"user_id":"alice","client_id":"spa-frontend"}`)
	secret, err := secrets.AddClient(h.dataDir, "orders-api")
	if err != nil {
		t.Fatal(err)
	}

	// A token as a ledger before client_id signed them, with its key.
	keys, err := secrets.LoadOrCreate(h.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := accesstoken.NewSigner("http://"+addr, "http://"+addr, accesstoken.NewEd25519Key(keys.SigningKey))
	if err != nil {
		t.Fatal(err)
	}
	old, err := signer.Sign(accesstoken.Claims{Subject: "alice", SessionID: s.ID, ID: "j1", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(node, "standard-clients.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"LEDGER_ISSUER=http://"+addr, "ACCESS_TOKEN="+s.Access, "REFRESH_TOKEN="+s.Refresh, "CLIENT_ID=spa-frontend",
		"INTROSPECTION_CLIENT_ID=orders-api", "INTROSPECTION_CLIENT_SECRET="+secret, "TOKEN_WITHOUT_CLIENT_ID="+old)
	out, err := cmd.CombinedOutput()
	t.Logf("node standard-clients.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("a standard client refused what the ledger served: %v", err)
	}
	if n := strings.Count(string(out), "ok: "); n != 10 {
		t.Fatalf("%d checks passed, want 10", n)
	}
	// What oauth4webapi's revocation did is in the stream: the session ended.
	if events := h.history(s.ID); !slices.Contains(events, "session.revoked") {
		t.Fatalf("history %v", events)
	}
}

// nodeInterop returns node and the interop/ directory, its pinned packages
// installed (npm ci on the first run); it skips the test without Node.js.
func nodeInterop(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("Node.js is not installed: this check with standard clients needs it (CI installs it)")
	}
	dir, err = filepath.Abs(filepath.Join("..", "..", "interop"))
	if err != nil {
		t.Fatal(err)
	}
	nodeInstall.Do(func() {
		installed := true
		for _, pkg := range []string{"oauth4webapi", "jose", "playwright-core", "standardwebhooks"} {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); err != nil {
				installed = false
			}
		}
		if !installed {
			cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				nodeInstallErr = fmt.Errorf("npm ci in interop/: %v\n%s", err, out)
			}
		}
	})
	if nodeInstallErr != nil {
		t.Fatal(nodeInstallErr)
	}
	return node, dir
}

var (
	nodeInstall    sync.Once
	nodeInstallErr error
)
