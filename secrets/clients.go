package secrets

import (
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"time"
)

// Introspection clients are the resource servers allowed to call the token
// introspection endpoint (RFC 7662) with HTTP Basic authentication
// (client_secret_basic, RFC 6749 §2.3.1), each with a name and a secret of
// its own, so that none needs the admin token. They are a file of named
// digests (digestfile.go): the ledger keeps only a SHA-256 digest of each
// secret.

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

func (c Client) entryName() string   { return c.ID }
func (c Client) entryDigest() string { return c.SecretSHA256 }

var clientsKind = &digestKind[Client]{
	file: ClientsFile, prefix: ClientSecretPrefix, listKey: "clients", digestKey: "secret_sha256",
	fileWhat: "an introspection clients file", what: "introspection client", nameWhat: "client id", max: MaxClients,
	newEntry: func(name, digest string, created time.Time) Client {
		return Client{ID: name, SecretSHA256: digest, Created: created}
	},
}

// Clients is a set of introspection clients.
type Clients struct{ set *digestSet[Client] }

// List returns the clients, in the order they were added.
func (c *Clients) List() []Client { return slices.Clone(c.set.list) }

// Len is the number of clients.
func (c *Clients) Len() int { return len(c.set.list) }

// dummy is compared with when a client id is unknown, so that an unknown id
// and a wrong secret take the same work.
var dummy = sha256.Sum256([]byte("sessionledger: no such client"))

// Authenticate reports whether secret is the secret of client id, comparing
// digests in constant time.
func (c *Clients) Authenticate(id, secret string) bool {
	if c == nil {
		return false
	}
	want, ok := c.set.byName[id]
	if !ok {
		want = dummy
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok
}

// ParseClients reads a clients file's contents; source names it in errors.
// Empty contents (or only whitespace) are no clients.
func ParseClients(b []byte, source string) (*Clients, error) {
	s, err := clientsKind.parse(b, source)
	if err != nil {
		return nil, err
	}
	return &Clients{s}, nil
}

// ValidateClientName checks an introspection client's id: 1 to 64 characters
// of letters, digits, '.', '_' and '-' (it is sent URL-encoded in HTTP Basic
// and shown in logs and lists, so it is kept plain).
func ValidateClientName(id string) error { return validateName(id, clientsKind.nameWhat) }

// LoadClients reads the clients file at path; a missing file is an empty set.
func LoadClients(path string) (*Clients, error) {
	s, err := clientsKind.load(path)
	if err != nil {
		return nil, err
	}
	return &Clients{s}, nil
}

// AddClient adds an introspection client named id to the clients file in
// dir and returns its secret, which is not stored: it is shown once.
func AddClient(dir, id string) (secret string, err error) { return clientsKind.add(dir, id) }

// RemoveClient removes the introspection client named id from the clients
// file in dir.
func RemoveClient(dir, id string) error { return clientsKind.remove(dir, id) }

// ClientsSource gives the current introspection clients: fixed ones (from
// the environment), or the data dir's file, read again when it changes, so
// that a client added or removed with "sessionledger introspection-clients"
// counts at once, without a restart, for one stat of the file per use.
type ClientsSource struct {
	fixed *Clients
	file  *watched[*Clients]
}

// FixedClients is a source that always gives c.
func FixedClients(c *Clients) *ClientsSource { return &ClientsSource{fixed: c} }

// WatchClients is a source reading the clients file at path, which it reads
// once now: a file that cannot be read is an error at start.
func WatchClients(path string) (*ClientsSource, error) {
	w := &watched[*Clients]{path: path, load: LoadClients, none: &Clients{emptySet[Client]()}}
	if _, err := w.current(); err != nil {
		return nil, err
	}
	return &ClientsSource{file: w}, nil
}

// Current returns the clients now. When the file has changed into one that
// cannot be read or is invalid, no client counts until it is fixed (a
// client removed must not go on working because the new file was written
// wrongly), and the error is returned once per change, for the caller to log.
func (s *ClientsSource) Current() (*Clients, error) {
	if s.file == nil {
		return s.fixed, nil
	}
	return s.file.current()
}
