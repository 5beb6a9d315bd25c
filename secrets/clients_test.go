package secrets

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	// A file broken later counts as no clients (a removal written wrongly
	// must not leave the removed client working) and says so, once.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Current()
	if err == nil || cur.Authenticate("orders-api", a) {
		t.Fatalf("broken file: %v", err)
	}
	if cur, err := src.Current(); err != nil || cur.Authenticate("orders-api", a) {
		t.Fatalf("the same broken file: reported twice (%v), or a client counts again", err)
	}
	// A rewrite in place of the same size is seen (the change time moves).
	good, _ := json.Marshal(map[string][]Client{"clients": c.List()[:1]})
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if cur, err := src.Current(); err != nil || !cur.Authenticate("orders-api", a) {
		t.Fatalf("repaired file: %v", err)
	}
	// The CLI refuses a data dir that does not exist rather than make one
	// the ledger never reads.
	if _, err := AddClient(filepath.Join(dir, "typo"), "x"); err == nil {
		t.Fatal("a missing data dir was created")
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
	for name, content := range map[string]string{
		"the digest of the empty secret": `{"clients":[{"client_id":"a","secret_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}`,
		"trailing data":                  `{"clients":[]} {}`,
	} {
		if _, err := ParseClients([]byte(content), "test"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if c, err := ParseClients([]byte(" \n"), "test"); err != nil || c.Len() != 0 || c.Authenticate("a", "") {
		t.Fatalf("empty contents are no clients: %v", err)
	}
	var none *Clients
	if none.Authenticate("a", "b") {
		t.Fatal("a nil set authenticated")
	}
}

// TestConcurrentChangesAreNotLost: commands changing the clients file at
// once take turns, so every change lands.
func TestConcurrentChangesAreNotLost(t *testing.T) {
	dir := t.TempDir()
	if _, err := AddClient(dir, "gone"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 21)
	for i := range 20 {
		wg.Go(func() {
			_, err := AddClient(dir, fmt.Sprintf("c%d", i))
			errs <- err
		})
	}
	wg.Go(func() { errs <- RemoveClient(dir, "gone") })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := LoadClients(filepath.Join(dir, ClientsFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 20 || slices.ContainsFunc(c.List(), func(cl Client) bool { return cl.ID == "gone" }) {
		t.Fatalf("%d clients after 20 adds and a removal: %v", c.Len(), c.List())
	}
}

// BenchmarkIntrospectionClientAuth is what authenticating an introspection
// client costs per request: a stat of the file and a SHA-256.
func BenchmarkIntrospectionClientAuth(b *testing.B) {
	dir := b.TempDir()
	secret, err := AddClient(dir, "orders-api")
	if err != nil {
		b.Fatal(err)
	}
	src, err := WatchClients(filepath.Join(dir, ClientsFile))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c, err := src.Current()
		if err != nil || !c.Authenticate("orders-api", secret) {
			b.Fatal("refused")
		}
	}
}
