package secrets

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Introspection clients are the resource servers allowed to call the token
// introspection endpoint (RFC 7662) with HTTP Basic authentication
// (client_secret_basic, RFC 6749 §2.3.1), each with a name and a secret of
// its own, so that none needs the admin token. The ledger keeps only a
// SHA-256 digest of each secret: a secret is 32 random bytes, which no
// search can find from its digest.

// ClientsFile is the data dir's file of introspection clients.
const ClientsFile = "introspection-clients.json"

// ClientSecretPrefix starts every client secret, so that one found in the
// wild is recognised.
const ClientSecretPrefix = "slcs_"

// MaxClients bounds the number of introspection clients in one file.
const MaxClients = 1000

// Client is one introspection client as stored.
type Client struct {
	ID string `json:"client_id"`
	// SecretSHA256 is the base64url SHA-256 digest of the client's secret.
	SecretSHA256 string    `json:"secret_sha256"`
	Created      time.Time `json:"created"`
}

type clientsFile struct {
	Clients []Client `json:"clients"`
}

// Clients is a set of introspection clients.
type Clients struct {
	byID map[string][sha256.Size]byte
	list []Client
}

// List returns the clients, in the order they were added.
func (c *Clients) List() []Client { return slices.Clone(c.list) }

// Len is the number of clients.
func (c *Clients) Len() int { return len(c.list) }

// dummy is compared with when a client id is unknown, so that an unknown id
// and a wrong secret take the same work.
var dummy = sha256.Sum256([]byte("sessionledger: no such client"))

// Authenticate reports whether secret is the secret of client id, comparing
// digests in constant time.
func (c *Clients) Authenticate(id, secret string) bool {
	if c == nil {
		return false
	}
	want, ok := c.byID[id]
	if !ok {
		want = dummy
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok
}

// emptySecret is the digest of the empty string: no client's secret.
var emptySecret = sha256.Sum256(nil)

// ParseClients reads a clients file's contents; source names it in errors.
// Empty contents (or only whitespace) are no clients.
func ParseClients(b []byte, source string) (*Clients, error) {
	var f clientsFile
	if strings.TrimSpace(string(b)) != "" {
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("secrets: %s is not an introspection clients file: %v", source, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("secrets: %s has data after its JSON object", source)
		}
	}
	if len(f.Clients) > MaxClients {
		return nil, fmt.Errorf("secrets: %s holds %d introspection clients, more than %d", source, len(f.Clients), MaxClients)
	}
	c := &Clients{byID: make(map[string][sha256.Size]byte, len(f.Clients)), list: f.Clients}
	for i, cl := range f.Clients {
		if err := ValidateClientName(cl.ID); err != nil {
			return nil, fmt.Errorf("secrets: %s: client %d: %w", source, i+1, err)
		}
		if _, dup := c.byID[cl.ID]; dup {
			return nil, fmt.Errorf("secrets: %s: client %q is listed twice", source, cl.ID)
		}
		sum, err := base64.RawURLEncoding.DecodeString(cl.SecretSHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("secrets: %s: client %q: secret_sha256 is not a base64url SHA-256 digest", source, cl.ID)
		}
		if [sha256.Size]byte(sum) == emptySecret {
			return nil, fmt.Errorf("secrets: %s: client %q has an empty secret", source, cl.ID)
		}
		c.byID[cl.ID] = [sha256.Size]byte(sum)
	}
	return c, nil
}

// ValidateClientName checks an introspection client's id: 1 to 64 characters
// of letters, digits, '.', '_' and '-' (it is sent URL-encoded in HTTP Basic
// and shown in logs and lists, so it is kept plain).
func ValidateClientName(id string) error {
	if id == "" || len(id) > 64 {
		return errors.New("a client id is 1 to 64 characters")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return errors.New("a client id holds only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// LoadClients reads the clients file at path; a missing file is an empty set.
func LoadClients(path string) (*Clients, error) {
	b, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Clients{byID: map[string][sha256.Size]byte{}}, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseClients(b, path)
}

// AddClient adds an introspection client named id to the clients file in
// dir and returns its secret, which is not stored: it is shown once.
func AddClient(dir, id string) (secret string, err error) {
	if err := ValidateClientName(id); err != nil {
		return "", err
	}
	secret = ClientSecretPrefix + base64.RawURLEncoding.EncodeToString(random(32))
	sum := sha256.Sum256([]byte(secret))
	err = updateClients(dir, func(list []Client) ([]Client, error) {
		if slices.ContainsFunc(list, func(c Client) bool { return c.ID == id }) {
			return nil, fmt.Errorf("secrets: an introspection client %q exists; remove it first to replace its secret", id)
		}
		if len(list) >= MaxClients {
			return nil, fmt.Errorf("secrets: there are %d introspection clients already, the most a file holds", len(list))
		}
		return append(list, Client{ID: id, SecretSHA256: base64.RawURLEncoding.EncodeToString(sum[:]), Created: time.Now().UTC().Truncate(time.Second)}), nil
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// RemoveClient removes the introspection client named id from the clients
// file in dir.
func RemoveClient(dir, id string) error {
	return updateClients(dir, func(list []Client) ([]Client, error) {
		i := slices.IndexFunc(list, func(c Client) bool { return c.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("secrets: no introspection client %q", id)
		}
		return slices.Delete(list, i, i+1), nil
	})
}

// updateClients rewrites the clients file in dir with change applied: a
// private temporary file, owned as the old one was, renamed over it, so that
// a ledger reading it sees the old set or the new one, never half of either.
// Commands changing the file at once take turns (a lock file beside it), so
// none loses another's change.
func updateClients(dir string, change func([]Client) ([]Client, error)) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("secrets: the data dir %s does not exist: give the ledger's --data-dir", dir)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "."+ClientsFile+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return fmt.Errorf("secrets: lock %s: %w", lock.Name(), err)
	}
	path := filepath.Join(dir, ClientsFile)
	current, err := LoadClients(path)
	if err != nil {
		return err
	}
	list, err := change(current.List())
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(clientsFile{Clients: list}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := writeTemp(dir, ClientsFile, append(b, '\n'), func(f *os.File) error {
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
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself, durably
		d.Close()
	}
	return nil
}

// ClientsSource gives the current introspection clients: fixed ones (from
// the environment), or the data dir's file, read again when it changes, so
// that a client added or removed with "sessionledger introspection-clients"
// counts at once, without a restart. Each use costs one stat of the file
// (about a microsecond); the file is read only when it is another file
// (updates rename a new one into place) or its size or time changed.
type ClientsSource struct {
	path string

	mu      sync.Mutex
	stat    os.FileInfo // of the file last read; nil: there was none
	clients *Clients
}

// FixedClients is a source that always gives c.
func FixedClients(c *Clients) *ClientsSource { return &ClientsSource{clients: c} }

// WatchClients is a source reading the clients file at path, which it reads
// once now: a file that cannot be read is an error at start.
func WatchClients(path string) (*ClientsSource, error) {
	s := &ClientsSource{path: path}
	if err := s.refresh(); err != nil {
		return nil, err
	}
	return s, nil
}

// Current returns the clients now. When the file has changed into one that
// cannot be read or is invalid, no client counts until it is fixed (a
// client removed must not go on working because the new file was written
// wrongly), and the error is returned once per change, for the caller to log.
func (s *ClientsSource) Current() (*Clients, error) {
	if s.path == "" {
		return s.clients, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.refresh()
	return s.clients, err
}

// refresh reads the file if it is not the one last read, and returns an
// error the first time a file cannot be used.
func (s *ClientsSource) refresh() error {
	fi, err := os.Stat(s.path)
	if err != nil {
		fi = nil
	}
	if s.clients != nil && sameFile(fi, s.stat) {
		return nil
	}
	s.stat = fi
	c, err := LoadClients(s.path)
	if err != nil {
		s.clients = &Clients{byID: map[string][sha256.Size]byte{}}
		return err
	}
	s.clients = c
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
