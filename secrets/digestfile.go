package secrets

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// A file of named digests keeps named secrets in the data dir as SHA-256
// digests only: the introspection clients (clients.go) and the admin tokens
// (admintokens.go) each have one. A secret is a prefix and 32 random bytes,
// which no search can find from its digest; it is shown once, when made.
// The file is JSON, {"<list member>": [entries]}, mode 0600; commands change
// it in turns (a lock file beside it) by renaming a new file into place, and
// a running ledger reads it again when it changes (watched).

// entry is one named secret as its file stores it.
type entry interface {
	entryName() string
	entryDigest() string // base64url SHA-256 of the secret
}

// digestKind describes one file of named digests.
type digestKind[E entry] struct {
	file      string // the file's name in the data dir
	prefix    string // starts every secret
	listKey   string // the JSON member holding the entries
	digestKey string // an entry's digest member, for messages
	fileWhat  string // the file, in messages: "an introspection clients file"
	what      string // an entry, in messages: "introspection client"
	nameWhat  string // an entry's name, in messages: "client id"
	max       int
	// reserved is a name no entry may take (""; none), and reservedWhy says why.
	reserved, reservedWhy string
	newEntry              func(name, digest string, created time.Time) E
}

// digestSet is what a file of named digests holds.
type digestSet[E entry] struct {
	byName map[string][sha256.Size]byte
	list   []E
}

func emptySet[E entry]() *digestSet[E] {
	return &digestSet[E]{byName: map[string][sha256.Size]byte{}}
}

// emptySecret is the digest of the empty string: no entry's secret.
var emptySecret = sha256.Sum256(nil)

// parse reads a file's contents; source names it in errors. Empty contents
// (or only whitespace) are no entries.
func (k *digestKind[E]) parse(b []byte, source string) (*digestSet[E], error) {
	var list []E
	if len(bytes.TrimSpace(b)) > 0 {
		var top map[string]json.RawMessage
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&top); err != nil {
			return nil, fmt.Errorf("secrets: %s is not %s: %v", source, k.fileWhat, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("secrets: %s has data after its JSON object", source)
		}
		for name := range top {
			if name != k.listKey {
				return nil, fmt.Errorf("secrets: %s is not %s: json: unknown field %q", source, k.fileWhat, name)
			}
		}
		if raw, ok := top[k.listKey]; ok {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&list); err != nil {
				return nil, fmt.Errorf("secrets: %s is not %s: %v", source, k.fileWhat, err)
			}
		}
	}
	if len(list) > k.max {
		return nil, fmt.Errorf("secrets: %s holds %d %ss, more than %d", source, len(list), k.what, k.max)
	}
	s := &digestSet[E]{byName: make(map[string][sha256.Size]byte, len(list)), list: list}
	for i, e := range list {
		name := e.entryName()
		if err := validateName(name, k.nameWhat); err != nil {
			return nil, fmt.Errorf("secrets: %s: %s %d: %w", source, k.what, i+1, err)
		}
		if name == k.reserved && k.reserved != "" {
			return nil, fmt.Errorf("secrets: %s: %s %d: %s", source, k.what, i+1, k.reservedWhy)
		}
		if _, dup := s.byName[name]; dup {
			return nil, fmt.Errorf("secrets: %s: %s %q is listed twice", source, k.what, name)
		}
		sum, err := base64.RawURLEncoding.DecodeString(e.entryDigest())
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("secrets: %s: %s %q: %s is not a base64url SHA-256 digest", source, k.what, name, k.digestKey)
		}
		if [sha256.Size]byte(sum) == emptySecret {
			return nil, fmt.Errorf("secrets: %s: %s %q has an empty secret", source, k.what, name)
		}
		s.byName[name] = [sha256.Size]byte(sum)
	}
	return s, nil
}

// validateName checks an entry's name: 1 to 64 characters of letters,
// digits, '.', '_' and '-' (names are shown in logs and lists, and a client
// id is sent URL-encoded in HTTP Basic, so they are kept plain). what names
// it in the error: "client id".
func validateName(name, what string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("a %s is 1 to 64 characters", what)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("a %s holds only letters, digits, '.', '_' and '-'", what)
		}
	}
	return nil
}

// load reads the file at path; a missing file is an empty set.
func (k *digestKind[E]) load(path string) (*digestSet[E], error) {
	b, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		return emptySet[E](), nil
	}
	if err != nil {
		return nil, err
	}
	return k.parse(b, path)
}

// add adds an entry named name to the file in dir and returns its secret,
// which is not stored: it is shown once.
func (k *digestKind[E]) add(dir, name string) (secret string, err error) {
	if err := validateName(name, k.nameWhat); err != nil {
		return "", err
	}
	if name == k.reserved && k.reserved != "" {
		return "", fmt.Errorf("secrets: %s", k.reservedWhy)
	}
	secret = k.prefix + base64.RawURLEncoding.EncodeToString(random(32))
	sum := sha256.Sum256([]byte(secret))
	err = k.update(dir, func(list []E) ([]E, error) {
		if slices.ContainsFunc(list, func(e E) bool { return e.entryName() == name }) {
			return nil, fmt.Errorf("secrets: an %s %q exists; remove it first to replace its secret", k.what, name)
		}
		if len(list) >= k.max {
			return nil, fmt.Errorf("secrets: there are %d %ss already, the most a file holds", len(list), k.what)
		}
		return append(list, k.newEntry(name, base64.RawURLEncoding.EncodeToString(sum[:]), time.Now().UTC().Truncate(time.Second))), nil
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// remove removes the entry named name from the file in dir.
func (k *digestKind[E]) remove(dir, name string) error {
	return k.update(dir, func(list []E) ([]E, error) {
		i := slices.IndexFunc(list, func(e E) bool { return e.entryName() == name })
		if i < 0 {
			return nil, fmt.Errorf("secrets: no %s %q", k.what, name)
		}
		return slices.Delete(list, i, i+1), nil
	})
}

// update rewrites the file in dir with change applied: a private temporary
// file, owned as the old one was, renamed over it, so that a ledger reading
// it sees the old set or the new one, never half of either. Commands
// changing the file at once take turns (a lock file beside it), so none
// loses another's change.
func (k *digestKind[E]) update(dir string, change func([]E) ([]E, error)) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("secrets: the data dir %s does not exist: give the ledger's --data-dir", dir)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "."+k.file+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return fmt.Errorf("secrets: lock %s: %w", lock.Name(), err)
	}
	path := filepath.Join(dir, k.file)
	current, err := k.load(path)
	if err != nil {
		return err
	}
	list, err := change(slices.Clone(current.list))
	if err != nil {
		return err
	}
	if list == nil {
		list = []E{} // written as [], not null
	}
	b, err := json.MarshalIndent(map[string][]E{k.listKey: list}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := writeTemp(dir, k.file, append(b, '\n'), func(f *os.File) error {
		if old, err := os.Stat(path); err == nil {
			return keepOwner(f, old)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename or removal in dir durable, as far as it can.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// watched is what a file holds, read again when the file changes, so that
// a change made with the CLI counts at once, without a restart. Each use
// costs one stat of the file (about a microsecond); the file is read only
// when it is another file (updates rename a new one into place) or its
// size or times changed.
type watched[T any] struct {
	path string
	// load reads the file; a missing file is no error.
	load func(path string) (T, error)
	// none is what counts while the file cannot be used: a secret removed
	// must not go on working because the new file was written wrongly.
	none T

	mu   sync.Mutex
	read bool        // the file has been looked at
	stat os.FileInfo // of the file last read; nil: there was none
	v    T
}

// current returns what the file holds now. When it has changed into one
// that cannot be read or is invalid, none counts until it is fixed, and the
// error is returned once per change, for the caller to log.
func (w *watched[T]) current() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.refresh()
	return w.v, err
}

func (w *watched[T]) refresh() error {
	fi, err := os.Stat(w.path)
	if err != nil {
		fi = nil
	}
	if w.read && sameFile(fi, w.stat) {
		return nil
	}
	w.read, w.stat = true, fi
	v, err := w.load(w.path)
	if err != nil {
		w.v = w.none
		return err
	}
	w.v = v
	return nil
}

// sameFile reports whether a and b describe the same file unchanged.
func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	as, an := changeTime(a)
	bs, bn := changeTime(b)
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && as == bs && an == bn
}
