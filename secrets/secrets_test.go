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

// TestVersion1KeysGetDerivedTagAndCheckpointKeys: a keys.json written before
// events were tagged still loads, and every instance sharing it derives the
// same tag and checkpoint keys, distinct from each other and from the keys
// they derive from; the file itself is not rewritten.
func TestVersion1KeysGetDerivedTagAndCheckpointKeys(t *testing.T) {
	v1 := []byte(`{"version":1,"ed25519_signing_seed":"` + strings.Repeat("A", 43) + `=","digest_key_id":"dOLD",` +
		`"digest_key":"` + strings.Repeat("B", 43) + `=","successor_key":"` + strings.Repeat("C", 43) + `=","subject_key":"` + strings.Repeat("D", 43) + `="}`)
	a, err := Parse(v1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(v1)
	if err != nil {
		t.Fatal(err)
	}
	if a.TagKeyID != "tdOLD" || a.CheckpointKeyID != "cdOLD" || !bytes.Equal(a.TagKey, b.TagKey) || !bytes.Equal(a.CheckpointKey, b.CheckpointKey) {
		t.Fatalf("derived keys differ between two loads, or ids %q %q", a.TagKeyID, a.CheckpointKeyID)
	}
	if len(a.TagKey) != 32 || bytes.Equal(a.TagKey, a.DigestKey) || bytes.Equal(a.TagKey, a.CheckpointKey.Seed()) || bytes.Equal(a.CheckpointKey.Seed(), a.DigestKey) {
		t.Fatal("derived keys are not independent of each other and of the digest key")
	}
	fresh, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if fresh.TagKeyID == "" || len(fresh.TagKey) != 32 || fresh.CheckpointKeyID == "" || bytes.Equal(fresh.TagKey, fresh.DigestKey) {
		t.Fatal("a new keys.json lacks its own tag and checkpoint keys")
	}
	// A file that names only some of the new keys is refused, not patched.
	partial := bytes.Replace(v1, []byte(`"version":1,`), []byte(`"version":2,"tag_key_id":"t1",`), 1)
	if _, err := Parse(partial); err == nil {
		t.Fatal("a version 2 file without its tag and checkpoint keys was accepted")
	}
}
