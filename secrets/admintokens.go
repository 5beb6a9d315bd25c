package secrets

import (
	"crypto/sha256"
	"crypto/subtle"
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

// Admin tokens open the admin API (Authorization: Bearer <admin token>).
// Several are valid at once, each with a name, so that an operator can add
// a new one, move tooling to it and remove the old one: the removed one is
// refused at once by every ledger sharing the data dir, without a restart.
//
// The token named "default" is the one of old: SESSIONLEDGER_ADMIN_TOKEN,
// fixed for the life of the process, or else the data dir's admin-token
// file, generated on first start. The others are a file of named digests
// (digestfile.go), admin-tokens.json, changed with "sessionledger
// admin-tokens", or SESSIONLEDGER_ADMIN_TOKENS in its form, fixed.

// AdminTokensFile is the data dir's file of named admin tokens.
const AdminTokensFile = "admin-tokens.json"

// DefaultAdminTokenName names the admin token of SESSIONLEDGER_ADMIN_TOKEN
// or, without it, of the data dir's admin-token file.
const DefaultAdminTokenName = "default"

// MaxAdminTokens bounds the named admin tokens in one file: each request to
// the admin API compares a digest with every one.
const MaxAdminTokens = 100

// NamedAdminToken is one named admin token as stored.
type NamedAdminToken struct {
	Name string `json:"name"`
	// TokenSHA256 is the base64url SHA-256 digest of the token.
	TokenSHA256 string    `json:"token_sha256"`
	Created     time.Time `json:"created"`
}

func (t NamedAdminToken) entryName() string   { return t.Name }
func (t NamedAdminToken) entryDigest() string { return t.TokenSHA256 }

var adminTokensKind = &digestKind[NamedAdminToken]{
	file: AdminTokensFile, prefix: AdminTokenPrefix, listKey: "admin_tokens", digestKey: "token_sha256",
	fileWhat: "an admin tokens file", what: "admin token", nameWhat: "admin token name", max: MaxAdminTokens,
	reserved:    DefaultAdminTokenName,
	reservedWhy: `the name "default" is the admin token of SESSIONLEDGER_ADMIN_TOKEN or of the admin-token file; choose another`,
	newEntry: func(name, digest string, created time.Time) NamedAdminToken {
		return NamedAdminToken{Name: name, TokenSHA256: digest, Created: created}
	},
}

// ValidateAdminToken checks an admin token an operator chose: at least 16
// characters, and no whitespace or control character, which a bearer token
// cannot hold (RFC 6750 §2.1): such a token could never be sent. The error
// never repeats the token.
func ValidateAdminToken(token string) error {
	if len(token) < 16 {
		return errors.New("an admin token of at least 16 characters is required")
	}
	if strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("an admin token must not contain whitespace or control characters: a bearer token holds none, so it could never be sent")
	}
	return nil
}

// AdminTokens is the set of admin tokens valid at one moment.
type AdminTokens struct {
	names []string
	sums  [][sha256.Size]byte
}

// Names returns the tokens' names: default first when there is one, then
// the named ones in the order they were added.
func (a *AdminTokens) Names() []string {
	if a == nil {
		return nil
	}
	return slices.Clone(a.names)
}

// Match returns the name of the admin token that token is. It takes one
// SHA-256 and compares it with the digest of every admin token in constant
// time, each one whatever the others gave, so that the time taken tells
// neither whether nor which one matched.
func (a *AdminTokens) Match(token string) (name string, ok bool) {
	if a == nil {
		return "", false
	}
	got := sha256.Sum256([]byte(token))
	match := -1
	for i := range a.sums {
		match = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(got[:], a.sums[i][:]), i, match)
	}
	if match < 0 {
		return "", false
	}
	return a.names[match], true
}

// AdminTokenConfig says where a ledger's admin tokens are.
type AdminTokenConfig struct {
	DataDir string
	// Token, when set (SESSIONLEDGER_ADMIN_TOKEN), is the token named
	// default; the data dir's admin-token file is then not read.
	Token string
	// Tokens, when set (SESSIONLEDGER_ADMIN_TOKENS), holds the named tokens
	// in the form of admin-tokens.json, which is then not read.
	Tokens *string
}

// AdminTokenSource gives the admin tokens valid now. Files are read again
// when they change, for two stats per use (admin-token and
// admin-tokens.json): a token added or removed with "sessionledger
// admin-tokens" counts at once. A file that changes into one that cannot be
// read or is invalid counts as no token until it is fixed.
type AdminTokenSource struct {
	envDefault *[sha256.Size]byte                    // SESSIONLEDGER_ADMIN_TOKEN
	legacy     *watched[*[sha256.Size]byte]          // the admin-token file, without it
	fixed      *digestSet[NamedAdminToken]           // SESSIONLEDGER_ADMIN_TOKENS
	named      *watched[*digestSet[NamedAdminToken]] // admin-tokens.json, without it

	mu         sync.Mutex
	cur        *AdminTokens // built from:
	curDefault *[sha256.Size]byte
	curNamed   *digestSet[NamedAdminToken]
}

// OpenAdminTokens returns the source of the admin tokens cfg describes,
// reading each file once now: one that cannot be used is an error at start.
// When there is no admin token at all (no SESSIONLEDGER_ADMIN_TOKEN, no
// admin-token file, no named token), it first generates the admin-token
// file, and returns its path as generated; so a default token removed while
// a named one remains does not come back at the next start.
func OpenAdminTokens(cfg AdminTokenConfig) (src *AdminTokenSource, generated string, err error) {
	s := &AdminTokenSource{}
	if cfg.Token != "" {
		if err := ValidateAdminToken(cfg.Token); err != nil {
			return nil, "", fmt.Errorf("secrets: SESSIONLEDGER_ADMIN_TOKEN: %w", err)
		}
		sum := sha256.Sum256([]byte(cfg.Token))
		s.envDefault = &sum
	} else {
		s.legacy = &watched[*[sha256.Size]byte]{path: filepath.Join(cfg.DataDir, AdminTokenFile), load: loadLegacyToken}
	}
	if cfg.Tokens != nil {
		if s.fixed, err = adminTokensKind.parse([]byte(*cfg.Tokens), "SESSIONLEDGER_ADMIN_TOKENS"); err != nil {
			return nil, "", err
		}
	} else {
		s.named = &watched[*digestSet[NamedAdminToken]]{path: filepath.Join(cfg.DataDir, AdminTokensFile), load: adminTokensKind.load, none: emptySet[NamedAdminToken]()}
	}
	current, err := s.Current()
	if err != nil {
		return nil, "", err
	}
	if len(current.names) == 0 {
		if _, generated, err = AdminToken(cfg.DataDir); err != nil {
			return nil, "", err
		}
		if current, err = s.Current(); err != nil {
			return nil, "", err
		}
		if len(current.names) == 0 {
			return nil, "", fmt.Errorf("secrets: %s was generated but cannot be read back", generated)
		}
	}
	return s, generated, nil
}

// Current returns the admin tokens now, and an error, once per change, when
// a file has changed into one that cannot be used (its tokens then do not
// count), for the caller to log.
func (s *AdminTokenSource) Current() (*AdminTokens, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	def, named := s.envDefault, s.fixed
	var errs []error
	if s.legacy != nil {
		var err error
		if def, err = s.legacy.current(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.named != nil {
		var err error
		if named, err = s.named.current(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.cur == nil || def != s.curDefault || named != s.curNamed {
		a := &AdminTokens{}
		if def != nil {
			a.names, a.sums = append(a.names, DefaultAdminTokenName), append(a.sums, *def)
		}
		for _, t := range named.list {
			a.names, a.sums = append(a.names, t.Name), append(a.sums, named.byName[t.Name])
		}
		s.cur, s.curDefault, s.curNamed = a, def, named
	}
	return s.cur, errors.Join(errs...)
}

// loadLegacyToken reads the admin-token file at path: the digest of the
// token it holds, nil when there is no file.
func loadLegacyToken(path string) (*[sha256.Size]byte, error) {
	b, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := ValidateAdminToken(strings.TrimSpace(string(b))); err != nil {
		return nil, fmt.Errorf("secrets: %s holds no usable admin token: %w", path, err)
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(b))))
	return &sum, nil
}

// AdminTokenInfo describes an admin token for a listing; it holds neither
// the token nor its digest.
type AdminTokenInfo struct {
	Name    string
	Created time.Time // zero for SESSIONLEDGER_ADMIN_TOKEN
	// Source is where the token is: SESSIONLEDGER_ADMIN_TOKEN, or the name of
	// its file in the data dir.
	Source string
}

// ListAdminTokens lists the admin tokens of the data dir dir: default first
// (from SESSIONLEDGER_ADMIN_TOKEN when envToken, or the admin-token file,
// dated by its modification time), then the named ones in the order they
// were added.
func ListAdminTokens(dir string, envToken bool) ([]AdminTokenInfo, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("secrets: the data dir %s does not exist: give the ledger's --data-dir", dir)
	}
	var out []AdminTokenInfo
	if envToken {
		out = append(out, AdminTokenInfo{Name: DefaultAdminTokenName, Source: "SESSIONLEDGER_ADMIN_TOKEN"})
	} else {
		path := filepath.Join(dir, AdminTokenFile)
		sum, err := loadLegacyToken(path)
		if err != nil {
			return nil, err
		}
		if sum != nil {
			fi, err := os.Stat(path)
			if err != nil {
				return nil, fmt.Errorf("secrets: %w", err)
			}
			out = append(out, AdminTokenInfo{Name: DefaultAdminTokenName, Created: fi.ModTime().UTC().Truncate(time.Second), Source: AdminTokenFile})
		}
	}
	named, err := adminTokensKind.load(filepath.Join(dir, AdminTokensFile))
	if err != nil {
		return nil, err
	}
	for _, t := range named.list {
		out = append(out, AdminTokenInfo{Name: t.Name, Created: t.Created, Source: AdminTokensFile})
	}
	return out, nil
}

// AddAdminToken adds an admin token named name to the data dir dir's
// admin-tokens.json and returns it, with AdminTokenPrefix; it is not
// stored (only its digest is): it is shown once.
func AddAdminToken(dir, name string) (token string, err error) { return adminTokensKind.add(dir, name) }

// RemoveAdminToken removes the admin token named name from the data dir
// dir: from admin-tokens.json, or, for default, the admin-token file.
// Ledgers sharing the dir refuse it at once. A token given in
// SESSIONLEDGER_ADMIN_TOKEN is in no file: it cannot be removed here.
func RemoveAdminToken(dir, name string) error {
	if name != DefaultAdminTokenName {
		return adminTokensKind.remove(dir, name)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("secrets: the data dir %s does not exist: give the ledger's --data-dir", dir)
	}
	path := filepath.Join(dir, AdminTokenFile)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("secrets: no admin token %q: there is no %s (a ledger given SESSIONLEDGER_ADMIN_TOKEN has its default token from there, which no command can remove: unset the variable and restart it)", DefaultAdminTokenName, path)
		}
		return fmt.Errorf("secrets: %w", err)
	}
	syncDir(dir)
	return nil
}
