package secrets

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// currentNames returns the names of the admin tokens src gives now, failing
// on an error.
func currentNames(t *testing.T, src *AdminTokenSource) []string {
	t.Helper()
	cur, err := src.Current()
	if err != nil {
		t.Fatal(err)
	}
	return cur.Names()
}

// wantMatch requires that token is the admin token named want ("" none).
func wantMatch(t *testing.T, src *AdminTokenSource, token, want string) {
	t.Helper()
	cur, _ := src.Current()
	name, ok := cur.Match(token)
	if ok != (want != "") || name != want {
		t.Fatalf("Match = %q %v, want %q", name, ok, want)
	}
}

// legacyToken reads the data dir's admin-token file.
func legacyToken(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestAdminTokensRotate: a named token added counts at once beside the
// default one; the default one removed is refused at once, and is not
// generated again at the next start while a named token remains.
func TestAdminTokensRotate(t *testing.T) {
	dir := t.TempDir()
	src, generated, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if generated != filepath.Join(dir, AdminTokenFile) {
		t.Fatalf("a first start generated %q", generated)
	}
	old := legacyToken(t, dir)
	if !strings.HasPrefix(old, AdminTokenPrefix) || !slices.Equal(currentNames(t, src), []string{"default"}) {
		t.Fatalf("names %v", currentNames(t, src))
	}
	wantMatch(t, src, old, "default")

	ops2, err := AddAdminToken(dir, "ops2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ops2, AdminTokenPrefix) || len(ops2) != len(AdminTokenPrefix)+43 {
		t.Fatalf("a token of %d characters", len(ops2))
	}
	path := filepath.Join(dir, AdminTokensFile)
	raw, err := os.ReadFile(path)
	if err != nil || strings.Contains(string(raw), ops2) || strings.Contains(string(raw), strings.TrimPrefix(ops2, AdminTokenPrefix)) {
		t.Fatalf("the file holds the token, or is missing: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	// Seen at once, both valid.
	if names := currentNames(t, src); !slices.Equal(names, []string{"default", "ops2"}) {
		t.Fatalf("names %v", names)
	}
	wantMatch(t, src, ops2, "ops2")
	wantMatch(t, src, old, "default")
	for _, wrong := range []string{"", ops2 + "x", old[:len(old)-1], "Bearer " + ops2} {
		wantMatch(t, src, wrong, "")
	}
	list, err := ListAdminTokens(dir, false)
	if err != nil || len(list) != 2 || list[0].Name != "default" || list[0].Source != AdminTokenFile || list[0].Created.IsZero() ||
		list[1].Name != "ops2" || list[1].Source != AdminTokensFile || list[1].Created.IsZero() {
		t.Fatalf("list %+v %v", list, err)
	}

	// The old one removed: refused at once.
	if err := RemoveAdminToken(dir, "default"); err != nil {
		t.Fatal(err)
	}
	wantMatch(t, src, old, "")
	wantMatch(t, src, ops2, "ops2")
	if err := RemoveAdminToken(dir, "default"); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_ADMIN_TOKEN") {
		t.Fatalf("removed twice: %v", err)
	}
	if list, err := ListAdminTokens(dir, false); err != nil || len(list) != 1 || list[0].Name != "ops2" {
		t.Fatalf("list %+v %v", list, err)
	}

	// The next start generates nothing: ops2 is an admin token.
	src2, generated, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir})
	if err != nil || generated != "" {
		t.Fatalf("a restart generated %q: %v", generated, err)
	}
	if _, err := os.Stat(filepath.Join(dir, AdminTokenFile)); !os.IsNotExist(err) {
		t.Fatalf("the removed admin-token file came back: %v", err)
	}
	wantMatch(t, src2, old, "")
	wantMatch(t, src2, ops2, "ops2")

	// The last one removed, nothing counts; a start then generates a new
	// default token, which is not the old one.
	if err := RemoveAdminToken(dir, "ops2"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveAdminToken(dir, "ops2"); err == nil {
		t.Fatal("removed twice")
	}
	if names := currentNames(t, src2); len(names) != 0 {
		t.Fatalf("names %v after removing every token", names)
	}
	wantMatch(t, src2, ops2, "")
	src3, generated, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir})
	if err != nil || generated == "" {
		t.Fatalf("a start without any admin token generated none: %v", err)
	}
	fresh := legacyToken(t, dir)
	if fresh == old {
		t.Fatal("the removed token came back")
	}
	wantMatch(t, src3, fresh, "default")
	// A source running beside sees the new file too.
	wantMatch(t, src2, fresh, "default")
}

// TestAdminTokenNames: names are plain, unique and not "default".
func TestAdminTokenNames(t *testing.T) {
	dir := t.TempDir()
	if _, err := AddAdminToken(dir, "ci"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"ci", "default", "", "has space", "ünicode", strings.Repeat("x", 65), "a:b"} {
		if _, err := AddAdminToken(dir, bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if _, err := AddAdminToken(filepath.Join(dir, "typo"), "x"); err == nil {
		t.Fatal("a missing data dir was created")
	}
	if err := RemoveAdminToken(filepath.Join(dir, "typo"), "default"); err == nil {
		t.Fatal("removed from a missing data dir")
	}
	if _, err := ListAdminTokens(filepath.Join(dir, "typo"), false); err == nil {
		t.Fatal("listed a missing data dir")
	}
	for name, content := range map[string]string{
		"not JSON":         "nope",
		"the clients file": `{"clients":[]}`,
		"unknown field":    `{"admin_tokens":[{"name":"a","token_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU","x":1}]}`,
		"bad digest":       `{"admin_tokens":[{"name":"a","token_sha256":"abc"}]}`,
		"empty token":      `{"admin_tokens":[{"name":"a","token_sha256":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}]}`,
		"named default":    `{"admin_tokens":[{"name":"default","token_sha256":"n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"}]}`,
		"listed twice":     `{"admin_tokens":[{"name":"a","token_sha256":"n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"},{"name":"a","token_sha256":"n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"}]}`,
		"trailing data":    `{"admin_tokens":[]} {}`,
	} {
		if _, err := adminTokensKind.parse([]byte(content), "test"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var none *AdminTokens
	if _, ok := none.Match("x"); ok || none.Names() != nil {
		t.Fatal("a nil set matched")
	}
}

// TestBrokenAdminTokenFilesCountAsNone: a file changed into one that cannot
// be used counts as no token (a removal written wrongly must not leave the
// removed token working) and says so once; each file stands alone.
func TestBrokenAdminTokenFilesCountAsNone(t *testing.T) {
	dir := t.TempDir()
	src, _, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	old := legacyToken(t, dir)
	a, err := AddAdminToken(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, AdminTokensFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Current()
	if err == nil || !slices.Equal(cur.Names(), []string{"default"}) {
		t.Fatalf("broken file: names %v, err %v", cur.Names(), err)
	}
	wantMatch(t, src, a, "")
	wantMatch(t, src, old, "default")
	if _, err := src.Current(); err != nil {
		t.Fatalf("the same broken file reported twice: %v", err)
	}
	// Repaired in place with the same size: seen (the change time moves).
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	wantMatch(t, src, a, "a")

	// The admin-token file readable by others, or holding a token that
	// cannot be sent: refused, and the error does not repeat the token.
	legacy := filepath.Join(dir, AdminTokenFile)
	if err := os.Chmod(legacy, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Current(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a readable admin-token file: %v", err)
	}
	wantMatch(t, src, old, "")
	wantMatch(t, src, a, "a")
	spaced := "slat_with a space inside it"
	if err := os.WriteFile(legacy, []byte(spaced+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Current(); err == nil || strings.Contains(err.Error(), "inside") {
		t.Fatalf("an admin-token file with whitespace: %v", err)
	}
	wantMatch(t, src, spaced, "")
	if _, _, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir}); err == nil {
		t.Fatal("a start read an unusable admin-token file")
	}
	if _, err := ListAdminTokens(dir, false); err == nil {
		t.Fatal("a listing hid an unusable admin-token file")
	}
	if err := os.WriteFile(legacy, []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantMatch(t, src, old, "default")
}

// TestAdminTokensFromTheEnvironment: SESSIONLEDGER_ADMIN_TOKEN is default
// and replaces the admin-token file; SESSIONLEDGER_ADMIN_TOKENS replaces
// admin-tokens.json. Neither is generated, and no error repeats a token.
func TestAdminTokensFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	inFile, err := AddAdminToken(dir, "in-file")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, AdminTokenFile), []byte("slat_the-file-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	envToken := "env-admin-token-0123456789"
	src, generated, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir, Token: envToken})
	if err != nil || generated != "" {
		t.Fatalf("generated %q: %v", generated, err)
	}
	wantMatch(t, src, envToken, "default")
	wantMatch(t, src, "slat_the-file-token-0123456789", "")
	wantMatch(t, src, inFile, "in-file")
	if list, err := ListAdminTokens(dir, true); err != nil || len(list) != 2 || list[0].Source != "SESSIONLEDGER_ADMIN_TOKEN" || !list[0].Created.IsZero() {
		t.Fatalf("list %+v %v", list, err)
	}

	for _, bad := range []string{"short-secret", "a long token with spaces", "tab\tseparated-0123456789"} {
		_, _, err := OpenAdminTokens(AdminTokenConfig{DataDir: t.TempDir(), Token: bad})
		if err == nil || strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "SESSIONLEDGER_ADMIN_TOKEN") {
			t.Errorf("SESSIONLEDGER_ADMIN_TOKEN of %d characters: %v", len(bad), err)
		}
	}

	// SESSIONLEDGER_ADMIN_TOKENS holds a file's contents.
	other := t.TempDir()
	fromEnv, err := AddAdminToken(other, "from-env")
	if err != nil {
		t.Fatal(err)
	}
	contents, err := os.ReadFile(filepath.Join(other, AdminTokensFile))
	if err != nil {
		t.Fatal(err)
	}
	env := string(contents)
	empty := t.TempDir()
	src, generated, err = OpenAdminTokens(AdminTokenConfig{DataDir: empty, Tokens: &env})
	if err != nil || generated != "" {
		t.Fatalf("generated %q beside a named token: %v", generated, err)
	}
	wantMatch(t, src, fromEnv, "from-env")
	if _, err := AddAdminToken(empty, "ignored"); err != nil {
		t.Fatal(err)
	}
	if names := currentNames(t, src); !slices.Equal(names, []string{"from-env"}) {
		t.Fatalf("the file counted beside the variable: %v", names)
	}
	bad := `{"admin_tokens":[{"name":"x","token_sha256":"short"}]}`
	if _, _, err := OpenAdminTokens(AdminTokenConfig{DataDir: t.TempDir(), Tokens: &bad}); err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_ADMIN_TOKENS") {
		t.Fatalf("a bad variable: %v", err)
	}
	// An empty set in the variable is no admin token: the file is generated.
	none := `{"admin_tokens":[]}`
	if _, generated, err := OpenAdminTokens(AdminTokenConfig{DataDir: t.TempDir(), Tokens: &none}); err != nil || generated == "" {
		t.Fatalf("no admin token at all, and none generated: %v", err)
	}
}

// TestConcurrentAdminTokenChangesAreNotLost: commands changing the file at
// once take turns, so every change lands, while a ledger reads it.
func TestConcurrentAdminTokenChangesAreNotLost(t *testing.T) {
	dir := t.TempDir()
	src, _, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := AddAdminToken(dir, "gone")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 22)
	tokens := make([]string, 20)
	for i := range 20 {
		wg.Go(func() {
			var err error
			tokens[i], err = AddAdminToken(dir, fmt.Sprintf("t%d", i))
			errs <- err
		})
	}
	wg.Go(func() { errs <- RemoveAdminToken(dir, "gone") })
	wg.Go(func() { errs <- RemoveAdminToken(dir, "default") })
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if cur, err := src.Current(); err != nil {
					t.Error(err) // never half a file
				} else {
					cur.Match(gone)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if names := currentNames(t, src); len(names) != 20 || slices.Contains(names, "gone") || slices.Contains(names, "default") {
		t.Fatalf("%d tokens after 20 adds and two removals: %v", len(names), names)
	}
	for i, tok := range tokens {
		wantMatch(t, src, tok, fmt.Sprintf("t%d", i))
	}
	wantMatch(t, src, gone, "")
}

// BenchmarkAdminTokenAuth is what authenticating an admin request costs:
// two stats, a SHA-256 and a comparison with each of the tokens.
func BenchmarkAdminTokenAuth(b *testing.B) {
	dir := b.TempDir()
	src, _, err := OpenAdminTokens(AdminTokenConfig{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	var token string
	for i := range 5 {
		if token, err = AddAdminToken(dir, fmt.Sprint("ops", i)); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		cur, err := src.Current()
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := cur.Match(token); !ok {
			b.Fatal("refused")
		}
	}
}
