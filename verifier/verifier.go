// Package verifier lets any Go service verify sessionledger access tokens
// offline and refuse the tokens of revoked sessions within milliseconds of the
// ledger recording the revocation.
//
// It fetches and caches the ledger's JWKS (refetching, rate limited, on an
// unknown kid), accepts only tokens of type at+jwt from the configured issuer
// and audience signed by a key of the JWKS with that key's one algorithm
// (EdDSA, ES256 or RS256, as the key's type says) (at most MaxTokenLength bytes and canonically encoded,
// checked with the signature before the claims are decoded), and follows the
// ledger's revocation events through a Feed (eventstore.Feed on the ledger's
// NATS). Revoked sessions and user cut-offs are remembered only as long as a
// token issued before them could still be unexpired, so memory stays flat.
package verifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/jwk"
)

// MaxTokenLength is the longest token Verify accepts, in bytes
// (accesstoken.MaxTokenLength): a longer one is refused with ErrTooLong
// before it is decoded or looked up in the cache.
const MaxTokenLength = accesstoken.MaxTokenLength

// maxJWKSSize is the largest JWKS response read, in bytes. An Ed25519 key is
// about 150 bytes of JSON, a P-256 key about 200, a 2048-bit RSA key about
// 450 (an 8192-bit one, the largest taken, about 1 500): this holds thousands.
const maxJWKSSize = 1 << 20

// Errors. Verify wraps the reason for operators; it never contains the token.
var (
	ErrInvalid = accesstoken.ErrInvalid
	// ErrTooLong: the token is longer than MaxTokenLength. It matches
	// ErrInvalid too.
	ErrTooLong     = accesstoken.ErrTooLong
	ErrRevoked     = errors.New("the token's session has been revoked")
	ErrFeedOffline = errors.New("revocation feed is not connected and the verifier fails closed")
	// ErrSkippedMessages: the feed carried messages the verifier could not
	// decode and skipped (junk, or events of a newer ledger). Revocations
	// are still applied; Health reports it so an operator can look, and
	// Verify does not refuse tokens because of it.
	ErrSkippedMessages = errors.New("revocation feed: skipped messages it could not decode")
)

// Feed follows the ledger's revocation events (eventstore.Feed implements it).
type Feed interface {
	// Follow delivers the revocation events recorded since since, then new
	// ones, until ctx ends; messages it cannot decode go to skip, and it goes
	// on; caughtUp is called once the replay is done.
	Follow(ctx context.Context, since time.Time, fn func(domain.Event), skip func(seq uint64, err error), caughtUp func()) error
	// Connected reports whether the feed's connection is up.
	Connected() bool
}

// Config configures a Verifier.
type Config struct {
	JWKSURL  string // the ledger's /.well-known/jwks.json
	Issuer   string // the ledger's --issuer
	Audience string // the ledger's --audience
	// MaxTokenTTL is the longest access-token lifetime the ledger issues
	// (the longest access_token_ttl of your policies; default 1 h). Tokens
	// that live longer are refused, since their revocation could be forgotten.
	MaxTokenTTL time.Duration
	Leeway      time.Duration // clock skew allowed on exp, nbf and iat (default 5 s)
	// FailClosed refuses every token while the revocation feed is down or not
	// yet caught up. Without it, tokens are accepted on signature and expiry
	// alone meanwhile, and Health reports the problem.
	FailClosed bool
	// JWKSRefetchInterval is the least time between two JWKS fetches caused by
	// an unknown kid (default 30 s).
	JWKSRefetchInterval time.Duration
	CacheSize           int           // verified tokens kept (default 100 000)
	PruneInterval       time.Duration // how often expired revocations are forgotten (default 1 min)
	HTTPClient          *http.Client
	Logger              *slog.Logger
	Now                 func() time.Time
}

func (c *Config) defaults() error {
	if c.JWKSURL == "" || c.Issuer == "" || c.Audience == "" {
		return errors.New("verifier: JWKSURL, Issuer and Audience are required")
	}
	if c.MaxTokenTTL <= 0 {
		c.MaxTokenTTL = time.Hour
	}
	if c.Leeway <= 0 {
		c.Leeway = 5 * time.Second
	}
	if c.JWKSRefetchInterval <= 0 {
		c.JWKSRefetchInterval = 30 * time.Second
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 100_000
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = time.Minute
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Claims are the verified claims of an access token.
type Claims struct {
	Subject   string // the user id
	SessionID string // sid
	// SessionSeq (sid_seq) is the stream sequence of the session's issue:
	// a revoke-all or deactivation of the user at a later sequence revokes
	// the session. 0 in a token of a ledger older than the claim.
	SessionSeq uint64
	// ClientID (client_id, RFC 9068) is the client the session was issued
	// for; empty in a token of a ledger older than the claim.
	ClientID  string
	ID        string         // jti
	IssuedAt  time.Time      // iat
	ExpiresAt time.Time      // exp
	Custom    map[string]any // the session's custom claims
}

// Verifier verifies access tokens. It is safe for concurrent use.
type Verifier struct {
	cfg  Config
	feed Feed

	keys      atomic.Pointer[map[string]jwk.PublicKey]
	fetchMu   sync.Mutex
	lastFetch time.Time
	maxAge    time.Duration // of the last JWKS fetched (Cache-Control), 0 if none

	denyMu   sync.RWMutex
	sessions map[string]time.Time // revoked session id → forget after
	users    map[string]cutoff    // user id → latest cut-off

	cacheMu sync.RWMutex
	cache   map[string]*Claims

	caughtUp  atomic.Bool
	followErr atomic.Pointer[error]
	skipped   atomic.Uint64
	lastSkip  atomic.Pointer[skip]
	cancel    context.CancelFunc
	done      chan struct{}
}

type skip struct {
	seq uint64
	err error
}

type cutoff struct {
	seq    uint64 // sessions issued before this stream sequence are revoked
	forget time.Time
}

// New fetches the JWKS and starts following the revocation feed from
// MaxTokenTTL (plus leeway) ago, so a restarted service forgets no revocation
// whose tokens could still be live. Close stops it.
func New(ctx context.Context, cfg Config, feed Feed) (*Verifier, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg, feed: feed, sessions: map[string]time.Time{}, users: map[string]cutoff{}, cache: map[string]*Claims{}, done: make(chan struct{})}
	if err := v.fetchKeys(ctx); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	since := cfg.Now().Add(-(cfg.MaxTokenTTL + cfg.Leeway))
	go v.follow(runCtx, since)
	return v, nil
}

// Close stops following revocations.
func (v *Verifier) Close() {
	v.cancel()
	<-v.done
}

func (v *Verifier) follow(ctx context.Context, since time.Time) {
	defer close(v.done)
	prune := time.NewTicker(v.cfg.PruneInterval)
	defer prune.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-prune.C:
				v.prune()
			}
		}
	}()
	err := v.feed.Follow(ctx, since, v.apply, v.skip, func() { v.caughtUp.Store(true) })
	if err != nil && ctx.Err() == nil {
		v.followErr.Store(&err)
		v.cfg.Logger.Error("verifier: revocation feed stopped", "err", err)
	}
}

// WaitReady blocks until the feed has replayed the recent revocations.
func (v *Verifier) WaitReady(ctx context.Context) error {
	for !v.caughtUp.Load() {
		if p := v.followErr.Load(); p != nil {
			return *p
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// skip notes a message of the feed that does not decode; following goes on.
func (v *Verifier) skip(seq uint64, err error) {
	v.skipped.Add(1)
	v.lastSkip.Store(&skip{seq: seq, err: err})
	v.cfg.Logger.Warn("verifier: skipped a message of the revocation feed that it cannot decode (not the ledger's, or from a newer ledger); revocations are still applied", "seq", seq, "err", err)
}

// Health is nil while revocations are being followed and caught up; otherwise
// it says why a revoked session might still be accepted. It also reports
// (ErrSkippedMessages) messages the feed carried that could not be decoded
// and were skipped; that alone does not make Verify refuse tokens.
func (v *Verifier) Health() error {
	if err := v.feedHealth(); err != nil {
		return err
	}
	if n := v.skipped.Load(); n > 0 {
		last := v.lastSkip.Load()
		return fmt.Errorf("%w: %d, the last at sequence %d (%v); revocations are still applied", ErrSkippedMessages, n, last.seq, last.err)
	}
	return nil
}

// Skipped returns how many messages of the feed were skipped.
func (v *Verifier) Skipped() uint64 { return v.skipped.Load() }

// feedHealth is nil while revocations are being followed and caught up.
func (v *Verifier) feedHealth() error {
	switch {
	case v.followErr.Load() != nil:
		return fmt.Errorf("verifier: revocation feed stopped: %v", *v.followErr.Load())
	case !v.feed.Connected():
		return errors.New("verifier: revocation feed disconnected")
	case !v.caughtUp.Load():
		return errors.New("verifier: replaying recent revocations")
	}
	return nil
}

// apply records one revocation event.
func (v *Verifier) apply(e domain.Event) {
	sessionID, cutoff := e.Revokes()
	if sessionID == "" && !cutoff {
		return
	}
	// Kept until every token of a session it revokes has expired by this
	// verifier's clock. Such a token was minted before the revocation was
	// recorded, so before this verifier learned of it, with exp at most
	// MaxTokenTTL after the minting instance's clock, which the exp check
	// already trusts to Leeway. Counting from when the verifier learned of it
	// (never earlier than the event's own time), and waiting that Leeway
	// beyond the token's own, no ledger instance's clock can make a
	// revocation be forgotten while a token it revoked still verifies.
	from := v.cfg.Now()
	if e.Time.After(from) {
		from = e.Time
	}
	forget := from.Add(v.cfg.MaxTokenTTL + 2*v.cfg.Leeway)
	v.denyMu.Lock()
	defer v.denyMu.Unlock()
	if sessionID != "" {
		v.sessions[sessionID] = forget
		return
	}
	switch d := e.Data.(type) {
	case domain.UserSessionsRevoked:
		v.cutUser(d.UserID, e.Seq, forget)
	case domain.UserDeactivated:
		v.cutUser(d.UserID, e.Seq, forget)
	}
}

// cutUser records a cut-off at stream sequence seq; the latest one holds,
// since it revokes every session an earlier one did.
func (v *Verifier) cutUser(userID string, seq uint64, forget time.Time) {
	if c, ok := v.users[userID]; !ok || seq > c.seq {
		v.users[userID] = cutoff{seq: seq, forget: forget}
	}
}

// prune forgets revocations whose tokens have all expired.
func (v *Verifier) prune() {
	now := v.cfg.Now()
	v.denyMu.Lock()
	for id, forget := range v.sessions {
		if now.After(forget) {
			delete(v.sessions, id)
		}
	}
	for id, c := range v.users {
		if now.After(c.forget) {
			delete(v.users, id)
		}
	}
	v.denyMu.Unlock()
	v.cacheMu.Lock()
	for tok, c := range v.cache {
		if now.After(c.ExpiresAt.Add(v.cfg.Leeway)) {
			delete(v.cache, tok)
		}
	}
	v.cacheMu.Unlock()
}

// DenyListSize returns how many revoked sessions and user cut-offs are held.
func (v *Verifier) DenyListSize() (sessions, users int) {
	v.denyMu.RLock()
	defer v.denyMu.RUnlock()
	return len(v.sessions), len(v.users)
}

// revoked reports whether c's session is revoked: by itself, or by a cut-off
// of its user later in the stream than the session's issue — the ledger's
// own rule (domain.Session.EndByUser), so clocks play no part. A token
// without the session's sequence (from a ledger older than sid_seq) is taken
// as issued before any cut-off of its user: refused, so the client
// refreshes and gets a token that has it.
func (v *Verifier) revoked(c *Claims) bool {
	v.denyMu.RLock()
	defer v.denyMu.RUnlock()
	if _, ok := v.sessions[c.SessionID]; ok {
		return true
	}
	cut, ok := v.users[c.Subject]
	return ok && (c.SessionSeq == 0 || c.SessionSeq < cut.seq)
}

// Verify checks token and returns its claims. A token is refused if it is
// longer than MaxTokenLength (before anything else), if it does not verify
// (accesstoken.Parse: canonical encoding, signature, typ, iss, aud, exp, nbf,
// iat), if its lifetime exceeds MaxTokenTTL, or if its session has been
// revoked.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if len(token) > MaxTokenLength {
		return nil, ErrTooLong
	}
	now := v.cfg.Now()
	if v.cfg.FailClosed {
		if err := v.feedHealth(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFeedOffline, err)
		}
	}
	v.cacheMu.RLock()
	c, hit := v.cache[token]
	v.cacheMu.RUnlock()
	if hit {
		if !now.Before(c.ExpiresAt.Add(v.cfg.Leeway)) {
			return nil, fmt.Errorf("%w: expired", ErrInvalid)
		}
	} else {
		var err error
		if c, err = v.parse(ctx, token, now); err != nil {
			return nil, err
		}
		v.remember(token, c)
	}
	if v.revoked(c) {
		return nil, ErrRevoked
	}
	return c, nil
}

func (v *Verifier) remember(token string, c *Claims) {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	if len(v.cache) >= v.cfg.CacheSize {
		// Full: drop an arbitrary tenth (at least one) rather than track
		// recency on the hot path.
		n := max(v.cfg.CacheSize/10, 1)
		for k := range v.cache {
			if n <= 0 {
				break
			}
			delete(v.cache, k)
			n--
		}
	}
	v.cache[token] = c
}

func (v *Verifier) parse(ctx context.Context, token string, now time.Time) (*Claims, error) {
	rules := accesstoken.Rules{Issuer: v.cfg.Issuer, Audience: v.cfg.Audience, Leeway: v.cfg.Leeway, MaxLifetime: v.cfg.MaxTokenTTL}
	t, err := accesstoken.Parse(token, now, rules, func(kid string) (jwk.PublicKey, error) { return v.key(ctx, kid) })
	if err != nil {
		return nil, err
	}
	c := &Claims{Subject: t.Subject, SessionID: t.SessionID, SessionSeq: t.SessionSeq, ClientID: t.ClientID, ID: t.ID, IssuedAt: t.IssuedAt, ExpiresAt: t.ExpiresAt, Custom: t.Custom}
	if c.Custom == nil {
		c.Custom = map[string]any{}
	}
	return c, nil
}

// key returns the public key for kid, refetching the JWKS when kid is
// unknown: at most once per JWKSRefetchInterval, or per the max-age the
// ledger served the JWKS with when that is shorter. The ledger publishes a
// new key for longer than that max-age before it signs with it, so a token
// of a new key always finds it: either the keys held were fetched after it
// was published, or they are older than the max-age and are fetched again.
func (v *Verifier) key(ctx context.Context, kid string) (jwk.PublicKey, error) {
	if k, ok := (*v.keys.Load())[kid]; ok {
		return k, nil
	}
	v.fetchMu.Lock()
	interval := v.cfg.JWKSRefetchInterval
	if v.maxAge > 0 && v.maxAge < interval {
		interval = v.maxAge
	}
	due := v.cfg.Now().Sub(v.lastFetch) >= interval
	v.fetchMu.Unlock()
	if k, ok := (*v.keys.Load())[kid]; ok {
		return k, nil // fetched by another request meanwhile
	}
	if due {
		if err := v.fetchKeys(ctx); err != nil {
			v.cfg.Logger.Warn("verifier: JWKS refetch failed", "err", err)
		}
		if k, ok := (*v.keys.Load())[kid]; ok {
			return k, nil
		}
	}
	return jwk.PublicKey{}, errors.New("unknown kid")
}

// fetchKeys loads the JWKS, keeping only its usable signing keys
// (jwk.Set.SigningKeys: Ed25519, P-256 and RSA of at least 2048 bits, each
// with its one algorithm).
func (v *Verifier) fetchKeys(ctx context.Context) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.lastFetch = v.cfg.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return fmt.Errorf("verifier: JWKS: %w", err)
	}
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("verifier: JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("verifier: JWKS: status %d", resp.StatusCode)
	}
	if resp.ContentLength > maxJWKSSize {
		return fmt.Errorf("verifier: JWKS: the response is %d bytes, more than %d", resp.ContentLength, maxJWKSSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return fmt.Errorf("verifier: JWKS: %w", err)
	}
	if len(body) > maxJWKSSize {
		return fmt.Errorf("verifier: JWKS: the response is more than %d bytes", maxJWKSSize)
	}
	var set jwk.Set
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("verifier: JWKS: %w", err)
	}
	v.maxAge = maxAge(resp.Header.Get("Cache-Control"))
	keys := set.SigningKeys()
	if len(keys) == 0 {
		return errors.New("verifier: JWKS holds no signing key")
	}
	v.keys.Store(&keys)
	return nil
}

// maxAge reads the max-age directive of a Cache-Control value (RFC 9111
// §5.2.2.1), at least a second and at most an hour; 0 when there is none.
func maxAge(cacheControl string) time.Duration {
	for _, d := range strings.Split(cacheControl, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(d), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		n, err := strconv.ParseUint(strings.Trim(value, `"`), 10, 32)
		if err != nil {
			return 0
		}
		return min(max(time.Duration(n)*time.Second, time.Second), time.Hour)
	}
	return 0
}
