package secrets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIntrospectionClients(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ClientsFile)
	src, err := WatchClients(path)
	if err != nil {
		t.Fatalf("a missing file is an empty set: %v", err)
	}
	a, err := AddClient(dir, "orders-api")
	if err != nil {
		t.Fatal(err)
	}
	b, err := AddClient(dir, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if a == b || !strings.HasPrefix(a, ClientSecretPrefix) || len(a) != len(ClientSecretPrefix)+43 {
		t.Fatalf("secrets %q %q", a, b)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), a) || strings.Contains(string(raw), b) {
		t.Fatal("the file holds a secret")
	}
	c, err := LoadClients(path)
	if err != nil || c.Len() != 2 {
		t.Fatalf("load: %v", err)
	}
	for _, tc := range []struct {
		id, secret string
		want       bool
	}{{"orders-api", a, true}, {"billing", b, true}, {"orders-api", b, false}, {"billing", a, false}, {"nobody", a, false}, {"orders-api", "", false}, {"", "", false}} {
		if got := c.Authenticate(tc.id, tc.secret); got != tc.want {
			t.Errorf("Authenticate(%q, secret) = %v", tc.id, got)
		}
	}
	if _, err := AddClient(dir, "orders-api"); err == nil {
		t.Fatal("an id added twice")
	}
	for _, bad := range []string{"", "has space", "ünicode", strings.Repeat("x", 65), "a:b"} {
		if _, err := AddClient(dir, bad); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
	// The watcher sees each change at once.
	if cur, err := src.Current(); err != nil || !cur.Authenticate("billing", b) {
		t.Fatalf("the watcher did not see the added client: %v", err)
	}
	if err := RemoveClient(dir, "billing"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveClient(dir, "billing"); err == nil {
		t.Fatal("removed twice")
	}
	if cur, _ := src.Current(); cur.Authenticate("billing", b) || !cur.Authenticate("orders-api", a) {
		t.Fatal("the watcher did not see the removal")
	}
	// A file broken later keeps the last good set and says so.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Current()
	if err == nil || !cur.Authenticate("orders-api", a) {
		t.Fatalf("broken file: %v", err)
	}
	if _, err := src.Current(); err != nil {
		t.Fatalf("the same broken file reported twice: %v", err)
	}
	// A file others can read is refused, like the keys.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadClients(path); err == nil {
		t.Fatal("a world-readable clients file was read")
	}
}

func TestParseClientsRefusesBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":        "nope",
		"unknown field":   `{"clients":[],"x":1}`,
		"bad digest":      `{"clients":[{"client_id":"a","secret_sha256":"abc"}]}`,
		"bad id":          `{"clients":[{"client_id":"a b","secret_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}`,
		"id listed twice": `{"clients":[{"client_id":"a","secret_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"},{"client_id":"a","secret_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}`,
	} {
		if _, err := ParseClients([]byte(content), "test"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if c, err := ParseClients([]byte(`{"clients":[{"client_id":"a","secret_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}`), "test"); err != nil || !c.Authenticate("a", "") {
		t.Fatalf("a valid file (the digest of the empty string): %v", err)
	}
}
