package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/keyring"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/transmit"
	"github.com/sessionledger/sessionledger/transport"
)

// Config is the configuration of sessionledger serve.
type Config struct {
	HTTPAddr string
	// AdminAddr, when set, is the listen address of the admin API and
	// /metrics, which HTTPAddr then does not serve.
	AdminAddr  string
	DataDir    string
	NATSListen string
	// NATSSync is the embedded server's JetStream sync interval: a duration,
	// "always", or "" for nats-server's default.
	NATSSync string
	NATSURL  string
	NATSAuth eventstore.Auth
	// Keys, when set (SESSIONLEDGER_KEYS), holds the keys in keys.json form
	// instead of the data dir, so that instances can share them.
	Keys string
	// IntrospectionClients, when set (SESSIONLEDGER_INTROSPECTION_CLIENTS),
	// holds the introspection clients in the form of the data dir's file,
	// which is then not read.
	IntrospectionClients *string
	Issuer               string
	Audience             string
	// AdminToken (SESSIONLEDGER_ADMIN_TOKEN) is the admin token named
	// default; without it, the data dir's admin-token file is.
	AdminToken string
	// AdminTokens, when set (SESSIONLEDGER_ADMIN_TOKENS), holds the named
	// admin tokens in the form of the data dir's admin-tokens.json, which is
	// then not read.
	AdminTokens *string
	ReuseGrace  time.Duration
	// RequestTimeout is the budget of one request, end to end
	// (ledger.Config.RequestTimeout): at most half of ReuseGrace. Zero:
	// ledger.DefaultRequestTimeout, or half of ReuseGrace when that is less.
	RequestTimeout time.Duration
	// DefaultPolicy names the preset for sessions issued without a policy.
	DefaultPolicy string
	// DefaultClientID is the client id of sessions issued without one.
	DefaultClientID string
	// SweepInterval is how often expiries are swept (tests shorten it).
	SweepInterval time.Duration
	// SnapshotInterval is how often a projection snapshot is considered (0:
	// never); one is written when SnapshotMinEvents have been applied since
	// the stored one.
	SnapshotInterval  time.Duration
	SnapshotMinEvents uint64
	// RateLimit (requests/s per client address on /oauth2/token,
	// /oauth2/revoke, /browser/* and /v1/me/*, 0 off), RateBurst,
	// TrustedProxyHeader: see transport.Config.
	RateLimit          float64
	RateBurst          int
	TrustedProxyHeader string
	// BrowserOrigins turns cookie mode on for these origins (transport.Config.BrowserOrigins).
	BrowserOrigins []string
	// DeliveryAllowHosts, when set, are the only hosts webhooks and SSF
	// push streams may be delivered to (transmit.ParseAllowList);
	// DeliveryAllowLoopback lets them be on loopback over http (tests and
	// local development); DeliveryRetryFor is how long a delivery is
	// retried before it is recorded as failed.
	DeliveryAllowHosts    string
	DeliveryAllowLoopback bool
	DeliveryRetryFor      time.Duration
	Replicas              int
	// CheckpointInterval is how often a signed checkpoint is appended while
	// there are new events (0: never).
	CheckpointInterval time.Duration
	// TrustUntaggedThrough accepts events without an integrity tag up to
	// this stream sequence (written by a ledger older than tags).
	TrustUntaggedThrough uint64
	LogLevel             slog.Level
	// SigningAlg is the algorithm of the access-token signing key: EdDSA,
	// ES256 or RS256 (RSA 2048).
	SigningAlg string
	// SigningKeyRotation is how long each signing key signs (0: only
	// `sessionledger keys rotate`); SigningKeyPrepublish how long a new one
	// is in the JWKS first.
	SigningKeyRotation   time.Duration
	SigningKeyPrepublish time.Duration
	// MaxAccessTokenTTL bounds access-token lifetimes; a retired signing key
	// stays in the JWKS this long plus KeyRetireLeeway after it last signed.
	MaxAccessTokenTTL time.Duration
	// KeyRetireLeeway is the clock skew allowed to verifiers (tests shorten it).
	KeyRetireLeeway time.Duration
	// KeyPropagation is how long a new refresh-token, tag or checkpoint key
	// waits before it takes over (tests shorten it; keyring.DefaultPropagation).
	KeyPropagation time.Duration
	// Now is the ledger's clock (tests set one; nil: time.Now). Decisions
	// (expiry, the grace window) and token times read it.
	Now func() time.Time
}

// DefaultConfig returns the defaults: everything local, embedded NATS.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:           ":8080",
		DataDir:            "./data",
		NATSListen:         "127.0.0.1:4222",
		ReuseGrace:         ledger.DefaultReuseGrace,
		DefaultPolicy:      domain.PolicyConsumer,
		DefaultClientID:    ledger.DefaultClientID,
		SweepInterval:      ledger.DefaultSweepInterval,
		SnapshotInterval:   5 * time.Minute,
		SnapshotMinEvents:  100_000,
		Replicas:           1,
		CheckpointInterval: time.Second,
		LogLevel:           slog.LevelInfo,

		SigningAlg:           accesstoken.EdDSA,
		SigningKeyPrepublish: 10 * time.Minute,
		MaxAccessTokenTTL:    ledger.DefaultMaxAccessTokenTTL,
		KeyRetireLeeway:      time.Minute,
		KeyPropagation:       keyring.DefaultPropagation,
		DeliveryRetryFor:     transmit.DefaultRetryFor,
	}
}

// complete fills the defaults that derive from other settings and checks the rest.
func (c *Config) complete() error {
	if c.Issuer == "" {
		_, port, err := net.SplitHostPort(c.HTTPAddr)
		if err != nil {
			return fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err)
		}
		c.Issuer = "http://localhost:" + port
	}
	if c.Audience == "" {
		c.Audience = c.Issuer
	}
	origins, err := transport.ParseOrigins(c.BrowserOrigins)
	if err != nil {
		return fmt.Errorf("--browser-origins: %w", err)
	}
	c.BrowserOrigins = origins
	if len(origins) > 0 {
		if err := transport.CheckCookieIssuer(c.Issuer); err != nil {
			return err
		}
	}
	if _, err := transmit.ParseAllowList(c.DeliveryAllowHosts); err != nil {
		return fmt.Errorf("--delivery-allow-hosts: %w", err)
	}
	if c.DeliveryRetryFor <= 0 {
		return errors.New("--delivery-retry-for must be positive")
	}
	if c.ReuseGrace < 0 {
		return errors.New("--reuse-grace must not be negative")
	}
	switch {
	case c.RequestTimeout < 0:
		return errors.New("--request-timeout must not be negative")
	case c.RequestTimeout > time.Minute:
		// A write stored later than eventstore.MaxStoreDelay after it was
		// made is refused as one the ledger gave up on.
		return fmt.Errorf("--request-timeout %v must be at most 1m: the stream refuses a write stored more than %v after it was made", c.RequestTimeout, eventstore.MaxStoreDelay)
	case c.RequestTimeout == 0:
		c.RequestTimeout = ledger.DefaultRequestTimeout
		if c.ReuseGrace > 0 {
			c.RequestTimeout = min(c.RequestTimeout, c.ReuseGrace/2)
		}
	}
	if c.ReuseGrace > 0 && 2*c.RequestTimeout > c.ReuseGrace {
		// A client whose refresh got a 503 when the budget ran out retries;
		// if the rotation did land, the retry must still be in the window.
		return fmt.Errorf("--request-timeout %v must be at most half of --reuse-grace %v, so that a client retrying after a 503 is still inside the grace window", c.RequestTimeout, c.ReuseGrace)
	}
	if _, err := domain.Preset(c.DefaultPolicy); err != nil {
		return fmt.Errorf("--default-policy: %w", err)
	}
	if err := ledger.ValidateClientID(c.DefaultClientID); err != nil {
		return fmt.Errorf("--default-client-id: %w", err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return errors.New("--replicas must be between 1 and 5")
	}
	if c.RateLimit < 0 || c.RateBurst < 0 {
		return errors.New("--rate-limit and --rate-burst must not be negative")
	}
	if c.CheckpointInterval < 0 {
		return errors.New("--checkpoint-interval must not be negative")
	}
	if c.AdminAddr != "" {
		_, port, err := net.SplitHostPort(c.AdminAddr)
		if err != nil {
			return fmt.Errorf("--admin-addr %q: %w", c.AdminAddr, err)
		}
		if c.AdminAddr == c.HTTPAddr && port != "0" {
			return errors.New("--admin-addr must differ from --http-addr")
		}
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	if !slices.Contains(accesstoken.Algorithms, c.SigningAlg) {
		return fmt.Errorf("--signing-alg %q: must be one of %s", c.SigningAlg, strings.Join(accesstoken.Algorithms, ", "))
	}
	switch {
	case c.SigningKeyPrepublish < 2*time.Second:
		return errors.New("--signing-key-prepublish must be at least 2s: the JWKS is served with a max-age of a third of it, at least 1s")
	case c.SigningKeyRotation < 0:
		return errors.New("--signing-key-rotation must not be negative (0: rotate only with `sessionledger keys rotate`)")
	case c.SigningKeyRotation > 0 && c.SigningKeyRotation <= c.SigningKeyPrepublish:
		return fmt.Errorf("--signing-key-rotation %v must be longer than --signing-key-prepublish %v", c.SigningKeyRotation, c.SigningKeyPrepublish)
	case c.MaxAccessTokenTTL < time.Second || c.MaxAccessTokenTTL > 24*time.Hour:
		return errors.New("--max-access-token-ttl must be between 1s and 24h")
	case c.KeyRetireLeeway < 0 || c.KeyPropagation <= 0:
		return errors.New("the key retire leeway must not be negative and the key propagation time must be positive")
	}
	return nil
}

// graceSetting turns the flag's "0 disables" into the ledger's "negative disables".
func graceSetting(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
