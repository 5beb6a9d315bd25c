package transport

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/secrets"
)

// TestAdminTokensByName: requireAdmin and requireIntrospector take every
// admin token valid now, tell the handler which one by name, and refuse one
// removed at once, with the challenge.
func TestAdminTokensByName(t *testing.T) {
	dir := t.TempDir()
	src, _, err := secrets.OpenAdminTokens(secrets.AdminTokenConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, secrets.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	old := strings.TrimSpace(string(raw))
	ops2, err := secrets.AddAdminToken(dir, "ops2")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s := &Server{cfg: Config{AdminTokens: src}, log: slog.New(slog.NewJSONHandler(&logs, nil))}
	e := echo.New()
	call := func(mw echo.MiddlewareFunc, header string) (status int, name any, challenge []string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/users/alice/sessions", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		rec := httptest.NewRecorder()
		c := e.NewContext(req, rec)
		err := mw(func(c echo.Context) error {
			name = c.Get(adminTokenKey)
			return c.NoContent(http.StatusOK)
		})(c)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Code, name, rec.Header().Values("WWW-Authenticate")
	}
	admin := s.requireAdmin
	introspector := s.requireIntrospector(true)
	for _, mw := range []echo.MiddlewareFunc{admin, introspector} {
		for header, want := range map[string]string{"Bearer " + old: "default", "bearer " + ops2: "ops2"} {
			if st, name, _ := call(mw, header); st != http.StatusOK || name != want {
				t.Fatalf("%d, token named %v; want 200 and %s", st, name, want)
			}
		}
	}
	for _, header := range []string{"", "Bearer " + ops2 + "x", "Bearer " + old[:len(old)-1], "Basic " + ops2} {
		if st, name, challenge := call(admin, header); st != http.StatusUnauthorized || name != nil || len(challenge) != 1 || challenge[0] != `Bearer realm="sessionledger admin"` {
			t.Fatalf("%d %v %q, want 401 with the challenge", st, name, challenge)
		}
	}

	// The old one removed: refused at once, the new one still taken.
	if err := secrets.RemoveAdminToken(dir, "default"); err != nil {
		t.Fatal(err)
	}
	if st, _, challenge := call(admin, "Bearer "+old); st != http.StatusUnauthorized || len(challenge) != 1 {
		t.Fatalf("a removed token: %d %q", st, challenge)
	}
	if st, _, _ := call(introspector, "Bearer "+old); st != http.StatusUnauthorized {
		t.Fatalf("a removed token introspected: %d", st)
	}
	if st, name, _ := call(admin, "Bearer "+ops2); st != http.StatusOK || name != "ops2" {
		t.Fatalf("the new token after the removal: %d %v", st, name)
	}

	// A broken admin-tokens.json: its tokens do not count, the operator is
	// told once, and no token reaches the log.
	if err := os.WriteFile(filepath.Join(dir, secrets.AdminTokensFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if st, _, _ := call(admin, "Bearer "+ops2); st != http.StatusUnauthorized {
			t.Fatalf("a token of a broken file: %d", st)
		}
	}
	if n := strings.Count(logs.String(), "cannot be used"); n != 1 {
		t.Fatalf("the broken file was reported %d times:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), strings.TrimPrefix(ops2, secrets.AdminTokenPrefix)) || strings.Contains(logs.String(), strings.TrimPrefix(old, secrets.AdminTokenPrefix)) {
		t.Fatal("a token reached the log")
	}
}

// TestNewRequiresAdminTokens: the API does not start without them.
func TestNewRequiresAdminTokens(t *testing.T) {
	if _, err := New(nil, nil, Config{}); err == nil {
		t.Fatal("started without admin tokens")
	}
}
