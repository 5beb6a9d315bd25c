package secrets

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateIsPrivateAndStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{KeysFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, err %v; want 0600", name, fi.Mode().Perm(), err)
		}
	}
	b, err := LoadOrCreate(dir)
	if err != nil || !bytes.Equal(a.SigningKey, b.SigningKey) || !bytes.Equal(a.DigestKey, b.DigestKey) || a.DigestKeyID != b.DigestKeyID {
		t.Fatalf("keys changed between starts: %v", err)
	}
	if bytes.Equal(a.DigestKey, a.SuccessorKey) || bytes.Equal(a.DigestKey, a.SubjectKey) {
		t.Fatal("keys are not independent")
	}
	tok, path, err := AdminToken(dir)
	if err != nil || !strings.HasPrefix(tok, AdminTokenPrefix) || len(tok) < 40 {
		t.Fatalf("admin token %d chars, err %v", len(tok), err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token mode %v", fi.Mode().Perm())
	}
	if again, _, _ := AdminToken(dir); again != tok {
		t.Fatal("admin token changed")
	}
}

func TestConcurrentFirstStartsAgree(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	sets := make([]*Set, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := LoadOrCreate(dir)
			if err != nil {
				t.Error(err)
			}
			sets[i] = s
		}(i)
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if sets[i] == nil || !bytes.Equal(sets[i].SigningKey, sets[0].SigningKey) || !bytes.Equal(sets[i].DigestKey, sets[0].DigestKey) {
			t.Fatalf("instance %d ended up with different keys", i)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestRefusesReadableKeys(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, KeysFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable keys accepted: %v", err)
	}
}
