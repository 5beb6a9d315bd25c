package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessionledger/sessionledger/secrets"
)

// adminTokensCLI runs "sessionledger admin-tokens args..." through run, as
// an operator would, and returns what it printed.
func adminTokensCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut strings.Builder
	err = run(t.Context(), append([]string{"admin-tokens"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// bearer is an Authorization header carrying token.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// wantAdminStatus requires that an admin call with token answers want, and
// that a 401 carries the bearer challenge.
func (h *ledgerHarness) wantAdminStatus(token string, want int) {
	h.t.Helper()
	req, err := http.NewRequest("GET", h.url+"/v1/users/alice/sessions", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header = bearer(token)
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		h.t.Fatalf("%s: an admin call answers %d, want %d", h.url, resp.StatusCode, want)
	}
	if want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != `Bearer realm="sessionledger admin"` {
		h.t.Fatalf("401 with WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
	}
}

// readAdminTokenFile returns the token of the data dir's admin-token file.
func readAdminTokenFile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, secrets.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestAdminTokenRotation: an operator adds a named admin token with the
// CLI, both the old (default, generated) one and the new one work, the old
// one is removed and is refused at once, without a restart, and does not
// come back after one.
func TestAdminTokenRotation(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.AdminToken = "" })
	old := readAdminTokenFile(t, h.dataDir)
	h.wantAdminStatus(old, http.StatusOK)

	stdout, _, err := adminTokensCLI(t, "add", "--data-dir", h.dataDir, "ops2")
	if err != nil {
		t.Fatal(err)
	}
	ops2 := strings.TrimSuffix(stdout, "\n")
	if !strings.HasPrefix(ops2, secrets.AdminTokenPrefix) || strings.ContainsAny(ops2, " \n") || ops2 == old {
		t.Fatalf("add printed %d characters, not one new token", len(stdout))
	}
	path := filepath.Join(h.dataDir, secrets.AdminTokensFile)
	raw, err := os.ReadFile(path)
	if err != nil || strings.Contains(string(raw), ops2) {
		t.Fatalf("the admin tokens file holds the token itself, or is missing: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin tokens file mode %v", fi.Mode().Perm())
	}
	// Both at once, with no wait: the file is read again when it changes.
	h.wantAdminStatus(ops2, http.StatusOK)
	h.wantAdminStatus(old, http.StatusOK)
	// The name of the token reaches the access log, for who did what.
	st, body := h.do("POST", "/v1/sessions", "application/json", `{"user_id":"alice"}`, bearer(old))
	if st != http.StatusCreated {
		t.Fatalf("issue: %d %v", st, body)
	}
	if st, body := h.do("DELETE", "/v1/sessions/"+toSession(body).ID, "", "", bearer(ops2)); st != http.StatusNoContent {
		t.Fatalf("revoke: %d %v", st, body)
	}
	if !strings.Contains(h.logs.String(), `"admin_token_name":"ops2"`) || !strings.Contains(h.logs.String(), `"admin_token_name":"default"`) {
		t.Fatal("the access log does not name the admin token used")
	}

	stdout, _, err = adminTokensCLI(t, "list", "--data-dir", h.dataDir)
	if err != nil || !strings.Contains(stdout, "default") || !strings.Contains(stdout, "ops2") || strings.Contains(stdout, secrets.AdminTokenPrefix) {
		t.Fatalf("list: %v\n%s", err, stdout)
	}
	for _, bad := range [][]string{{"add", "ops2"}, {"add", "default"}, {"add", "has space"}, {"remove", "nobody"}, {"add"}, {"list", "x"}} {
		if _, _, err := adminTokensCLI(t, append(bad[:1:1], append([]string{"--data-dir", h.dataDir}, bad[1:]...)...)...); err == nil {
			t.Errorf("admin-tokens %v: no error", bad)
		}
	}

	// The old one removed: 401 at once; the new one still works.
	if _, stderr, err := adminTokensCLI(t, "remove", "--data-dir", h.dataDir, "default"); err != nil || stderr != "" {
		t.Fatalf("remove: %v %s", err, stderr)
	}
	h.wantAdminStatus(old, http.StatusUnauthorized)
	h.wantAdminStatus(ops2, http.StatusOK)
	if _, _, err := adminTokensCLI(t, "remove", "--data-dir", h.dataDir, "default"); err == nil {
		t.Fatal("default removed twice")
	}
	if stdout, _, _ := adminTokensCLI(t, "list", "--data-dir", h.dataDir); strings.Contains(stdout, "default") {
		t.Fatalf("a removed token is listed:\n%s", stdout)
	}

	// A restart does not generate the old one, nor a new default.
	h.close()
	h2 := boot(t, h.dataDir, func(c *Config) { c.AdminToken = "" })
	if _, err := os.Stat(filepath.Join(h.dataDir, secrets.AdminTokenFile)); !os.IsNotExist(err) {
		t.Fatalf("admin-token is back after a restart: %v", err)
	}
	h2.wantAdminStatus(old, http.StatusUnauthorized)
	h2.wantAdminStatus(ops2, http.StatusOK)

	// The last token removed: the CLI warns, and the API refuses it.
	if _, stderr, err := adminTokensCLI(t, "remove", "--data-dir", h.dataDir, "ops2"); err != nil || !strings.Contains(stderr, "no admin token is left") {
		t.Fatalf("remove the last: %v %q", err, stderr)
	}
	h2.wantAdminStatus(ops2, http.StatusUnauthorized)

	for _, logs := range []string{h.logs.String(), h2.logs.String()} {
		for _, tok := range []string{old, ops2} {
			if strings.Contains(logs, strings.TrimPrefix(tok, secrets.AdminTokenPrefix)) {
				t.Fatal("an admin token is in the log")
			}
		}
	}
}

// TestAdminTokensRemovedOnEveryInstance: instances sharing a data dir
// refuse a removed admin token at once, each of them.
func TestAdminTokensRemovedOnEveryInstance(t *testing.T) {
	_, hs, dir := bootClusterWith(t, 2, func(c *Config) { c.AdminToken = "" })
	old := readAdminTokenFile(t, dir)
	stdout, _, err := adminTokensCLI(t, "add", "--data-dir", dir, "ops2")
	if err != nil {
		t.Fatal(err)
	}
	ops2 := strings.TrimSpace(stdout)
	for _, h := range hs {
		h.wantAdminStatus(old, http.StatusOK)
		h.wantAdminStatus(ops2, http.StatusOK)
	}
	if _, _, err := adminTokensCLI(t, "remove", "--data-dir", dir, "default"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		h.wantAdminStatus(old, http.StatusUnauthorized)
		h.wantAdminStatus(ops2, http.StatusOK)
	}
}

// TestAdminTokensFromTheEnvironment: SESSIONLEDGER_ADMIN_TOKENS holds named
// tokens for instances without a shared data dir; the CLI refuses to change
// what the environment fixes.
func TestAdminTokensFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	gateway, err := secrets.AddAdminToken(dir, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	contents, err := os.ReadFile(filepath.Join(dir, secrets.AdminTokensFile))
	if err != nil {
		t.Fatal(err)
	}
	env := string(contents)
	h := boot(t, "", func(c *Config) { c.AdminTokens = &env })
	h.wantAdminStatus(gateway, http.StatusOK)
	h.wantAdminStatus(testAdminToken, http.StatusOK) // SESSIONLEDGER_ADMIN_TOKEN, named default
	if _, err := os.Stat(filepath.Join(h.dataDir, secrets.AdminTokenFile)); !os.IsNotExist(err) {
		t.Fatalf("an admin-token file was generated beside SESSIONLEDGER_ADMIN_TOKEN: %v", err)
	}
	if _, err := secrets.AddAdminToken(h.dataDir, "ignored"); err != nil {
		t.Fatal(err)
	}
	if err := secrets.RemoveAdminToken(dir, "gateway"); err != nil {
		t.Fatal(err)
	}
	h.wantAdminStatus(gateway, http.StatusOK) // fixed by the variable

	env2 := map[string]string{"SESSIONLEDGER_ADMIN_TOKENS": env}
	if err := adminTokensCmd(t.Context(), []string{"add", "--data-dir", h.dataDir, "x"}, lookup(env2), &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_ADMIN_TOKENS") {
		t.Fatalf("add beside SESSIONLEDGER_ADMIN_TOKENS: %v", err)
	}
	fixed := map[string]string{"SESSIONLEDGER_ADMIN_TOKEN": testAdminToken}
	if err := adminTokensCmd(t.Context(), []string{"remove", "--data-dir", h.dataDir, "default"}, lookup(fixed), &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_ADMIN_TOKEN") || strings.Contains(err.Error(), testAdminToken) {
		t.Fatalf("remove default given in SESSIONLEDGER_ADMIN_TOKEN: %v", err)
	}
	var out strings.Builder
	if err := adminTokensCmd(t.Context(), []string{"list", "--data-dir", h.dataDir}, lookup(fixed), &out, &strings.Builder{}); err != nil ||
		!strings.Contains(out.String(), "SESSIONLEDGER_ADMIN_TOKEN") || strings.Contains(out.String(), testAdminToken) {
		t.Fatalf("list beside SESSIONLEDGER_ADMIN_TOKEN: %v\n%s", err, out.String())
	}

	bad := `{"admin_tokens":[{"name":"x","token_sha256":"short"}]}`
	cfg := DefaultConfig()
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir, cfg.AdminTokens = "127.0.0.1:0", "", t.TempDir(), &bad
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, h.m.Logger)
	defer m.Close()
	if err := m.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_ADMIN_TOKENS") {
		t.Fatalf("Run with a bad SESSIONLEDGER_ADMIN_TOKENS: %v", err)
	}
}

// lookup is a lookupEnv over env.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}
