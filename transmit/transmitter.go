package transmit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sessionledger/sessionledger/eventstore"
)

// Errors of the transmitter's operations, for the API to map; each is
// wrapped with a detail a user may be shown.
var (
	ErrTooSoon = errors.New("transmit: too soon")
	ErrLimit   = errors.New("transmit: limit reached")
)

// invalid returns an ErrInvalid error with a user-facing detail.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Limits.
const (
	MaxEndpoints          = 100 // webhooks and streams together
	MaxStreamsPerReceiver = 10
	maxDescription        = 256
	maxAuthorization      = 4096
	maxEventTypes         = 32
)

// Defaults.
const (
	DefaultAttemptTimeout = 10 * time.Second
	DefaultRetryFor       = 24 * time.Hour
	// MaxBackoff caps the wait between two attempts, so that a receiver
	// that comes back gets its backlog within about 30 s.
	MaxBackoff = 25 * time.Second
	// SecretOverlap is how long a rotated webhook secret keeps signing
	// beside the new one.
	SecretOverlap = 24 * time.Hour
	// MinVerificationInterval is the least time between two verification
	// requests of a stream, in seconds.
	MinVerificationInterval = 10
)

// Observer is told how deliveries go (metrics.Metrics).
type Observer interface {
	// Delivered: an event reached endpoint, latency after the stream stored it.
	Delivered(endpoint, kind string, latency time.Duration)
	// AttemptFailed: one attempt failed; it is tried again.
	AttemptFailed(endpoint, kind string)
	// GaveUp: delivery of one event was given up and recorded.
	GaveUp(endpoint, kind string)
	// Lag: events stored and not yet delivered to endpoint.
	Lag(endpoint, kind string, pending uint64)
	// Forget: endpoint was deleted.
	Forget(endpoint, kind string)
}

type nopObserver struct{}

func (nopObserver) Delivered(string, string, time.Duration) {}
func (nopObserver) AttemptFailed(string, string)            {}
func (nopObserver) GaveUp(string, string)                   {}
func (nopObserver) Lag(string, string, uint64)              {}
func (nopObserver) Forget(string, string)                   {}

// Config configures a Transmitter.
type Config struct {
	// Issuer is the ledger's issuer: the iss of SETs and the base of the
	// SSF endpoints.
	Issuer string
	Store  *eventstore.Store
	Bucket *eventstore.DeliveryBucket
	// Sealer encrypts webhook secrets and receivers' Authorization headers
	// in the bucket.
	Sealer *Sealer
	// SETs signs Security Event Tokens (keyring.Targets.SET feeds it).
	SETs *SETSigner
	// URLs is the policy receiver URLs must meet.
	URLs URLPolicy
	// AttemptTimeout bounds one delivery attempt (DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// RetryFor is how long after the stream stored an event its delivery
	// is retried before it is given up and recorded (DefaultRetryFor).
	RetryFor time.Duration
	Observer Observer
	Logger   *slog.Logger
	// Client sends the deliveries (URLs.Client(AttemptTimeout) when nil).
	Client *http.Client
}

// Transmitter delivers the ledger's events to webhooks and SSF streams, and
// manages them.
type Transmitter struct {
	cfg    Config
	issuer string
	reg    *Registry
	store  *eventstore.Store
	sets   *SETSigner
	client *http.Client
	obs    Observer
	log    *slog.Logger
	users  userIDs
	now    func() time.Time

	mu      sync.Mutex
	workers map[string]*worker // by endpoint id
	running sync.WaitGroup     // the workers' goroutines
}

// New returns a transmitter; Run delivers.
func New(cfg Config) (*Transmitter, error) {
	if cfg.Store == nil || cfg.Bucket == nil || cfg.Sealer == nil || cfg.SETs == nil || cfg.Issuer == "" {
		return nil, errors.New("transmit: the issuer, store, bucket, sealer and SET signer are required")
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = DefaultRetryFor
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = cfg.URLs.Client(cfg.AttemptTimeout)
	}
	t := &Transmitter{
		cfg: cfg, issuer: strings.TrimRight(cfg.Issuer, "/"),
		reg: NewRegistry(cfg.Bucket, cfg.Store, cfg.Sealer), store: cfg.Store, sets: cfg.SETs,
		client: cfg.Client, obs: cfg.Observer, log: cfg.Logger, now: time.Now,
		workers: map[string]*worker{},
	}
	t.users = userIDs{lookup: cfg.Store.SessionEvents, known: map[string]string{}}
	return t, nil
}

// Issuer returns the iss of the transmitter's SETs.
func (t *Transmitter) Issuer() string { return t.issuer }

// SETKeys returns the JWK Set that verifies the transmitter's SETs.
func (t *Transmitter) SETKeys() []byte { return t.sets.JWKS() }

// countEndpoints refuses one more endpoint past MaxEndpoints.
func (t *Transmitter) checkRoom(ctx context.Context) error {
	all, err := t.reg.List(ctx, "")
	if err != nil {
		return err
	}
	if len(all) >= MaxEndpoints {
		return fmt.Errorf("%w: at most %d webhooks and streams", ErrLimit, MaxEndpoints)
	}
	return nil
}
