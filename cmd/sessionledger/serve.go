package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/eventstore/embedded"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/metrics"
	"github.com/sessionledger/sessionledger/projections"
	"github.com/sessionledger/sessionledger/secrets"
	"github.com/sessionledger/sessionledger/transport"
)

// Config is the configuration of sessionledger serve.
type Config struct {
	HTTPAddr   string
	DataDir    string
	NATSListen string
	// NATSSync is the embedded server's JetStream sync interval: a duration,
	// "always", or "" for nats-server's default.
	NATSSync string
	NATSURL  string
	NATSAuth eventstore.Auth
	// Keys, when set (SESSIONLEDGER_KEYS), holds the keys in keys.json form
	// instead of the data dir, so that instances can share them.
	Keys       string
	Issuer     string
	Audience   string
	AdminToken string
	ReuseGrace time.Duration
	// DefaultPolicy names the preset for sessions issued without a policy.
	DefaultPolicy string
	// SweepInterval is how often expiries are swept (tests shorten it).
	SweepInterval time.Duration
	// SnapshotInterval is how often a projection snapshot is considered (0:
	// never); one is written when SnapshotMinEvents have been applied since
	// the stored one.
	SnapshotInterval  time.Duration
	SnapshotMinEvents uint64
	// RateLimit (requests/s per client address on /oauth2/token and
	// /oauth2/revoke, 0 off), RateBurst, TrustedProxyHeader: see transport.Config.
	RateLimit          float64
	RateBurst          int
	TrustedProxyHeader string
	Replicas           int
	LogLevel           slog.Level
}

// DefaultConfig returns the defaults: everything local, embedded NATS.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:          ":8080",
		DataDir:           "./data",
		NATSListen:        "127.0.0.1:4222",
		ReuseGrace:        ledger.DefaultReuseGrace,
		DefaultPolicy:     domain.PolicyConsumer,
		SweepInterval:     ledger.DefaultSweepInterval,
		SnapshotInterval:  5 * time.Minute,
		SnapshotMinEvents: 100_000,
		Replicas:          1,
		LogLevel:          slog.LevelInfo,
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
	if c.ReuseGrace < 0 {
		return errors.New("--reuse-grace must not be negative")
	}
	if _, err := domain.Preset(c.DefaultPolicy); err != nil {
		return fmt.Errorf("--default-policy: %w", err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return errors.New("--replicas must be between 1 and 5")
	}
	if c.RateLimit < 0 || c.RateBurst < 0 {
		return errors.New("--rate-limit and --rate-burst must not be negative")
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	return nil
}

// Main is a running ledger: embedded NATS (unless --nats-url), the stream,
// the projection following it, and the HTTP API. Run starts it; Close stops it.
type Main struct {
	Config Config
	Logger *slog.Logger

	embedded  *embedded.Embedded
	client    *eventstore.Client
	snapshots *eventstore.Snapshots
	proj      *projections.Sessions
	metrics   *metrics.Metrics
	api       *transport.Server
	ledger    *ledger.Ledger
	http      *http.Server
	ln        net.Listener

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	readyMu   sync.Mutex
	replayTo  uint64 // stream sequence the projection must reach to be ready
	caughtUp  bool
	closeOnce sync.Once
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, log *slog.Logger) *Main {
	return &Main{Config: cfg, Logger: log}
}

// HTTPURL is the base URL the API listens on.
func (m *Main) HTTPURL() string { return "http://" + m.ln.Addr().String() }

// NATSURL is the URL other processes use to reach the ledger's NATS.
func (m *Main) NATSURL() string {
	if m.embedded != nil {
		return m.embedded.ClientURL()
	}
	return m.Config.NATSURL
}

// Run starts the ledger and returns once it listens. It keeps running until
// Close.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	log := m.Logger
	var keys *secrets.Set
	var err error
	if cfg.Keys != "" {
		keys, err = secrets.Parse([]byte(cfg.Keys))
	} else {
		keys, err = secrets.LoadOrCreate(cfg.DataDir)
	}
	if err != nil {
		return err
	}
	adminToken := cfg.AdminToken
	if adminToken == "" {
		var path string
		if adminToken, path, err = secrets.AdminToken(cfg.DataDir); err != nil {
			return err
		}
		log.Info("admin token (SESSIONLEDGER_ADMIN_TOKEN not set) is in a file", "path", path)
	}

	if cfg.NATSURL == "" {
		m.embedded, err = embedded.Start(embedded.Config{
			StoreDir: filepath.Join(cfg.DataDir, "jetstream"),
			Listen:   cfg.NATSListen,
			Sync:     cfg.NATSSync,
			Logger:   log,
		})
		if err != nil {
			return err
		}
		m.client, err = m.embedded.Client(ctx, eventstore.Config{Replicas: cfg.Replicas})
		if url := m.embedded.ClientURL(); url != "" && err == nil {
			log.Info("embedded NATS listening", "url", url)
		}
	} else {
		m.client, err = eventstore.Dial(ctx, cfg.NATSURL, cfg.NATSAuth, eventstore.Config{Replicas: cfg.Replicas})
	}
	if err != nil {
		return err
	}

	if m.replayTo, err = m.client.LastSeq(ctx); err != nil {
		return err
	}
	m.proj = m.restore(ctx)
	defaultPolicy, err := domain.Preset(cfg.DefaultPolicy)
	if err != nil {
		return err
	}
	signer, err := accesstoken.NewSigner(cfg.Issuer, cfg.Audience, accesstoken.NewEd25519Key(keys.SigningKey))
	if err != nil {
		return err
	}
	m.metrics = metrics.New(metrics.State{
		LiveSessions: m.proj.LiveSessions,
		ProjectionLag: func() (uint64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			applied := m.proj.Applied()
			last, err := m.client.LastSeq(ctx)
			if err != nil || last <= applied {
				return 0, err
			}
			return last - applied, nil
		},
	})
	m.client.OnRetry = m.metrics.AppendRetry
	m.ledger = ledger.New(m.client, m.proj, signer, ledger.Keys{
		Token:      domain.TokenKeys{DigestKeyID: keys.DigestKeyID, DigestKey: keys.DigestKey, SuccessorKey: keys.SuccessorKey},
		SubjectKey: keys.SubjectKey,
	}, ledger.Config{ReuseGrace: graceSetting(cfg.ReuseGrace), DefaultPolicy: defaultPolicy, Logger: log, OnConflict: m.metrics.AppendConflict})
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(1)
	go m.follow(runCtx)
	if m.snapshots != nil && cfg.SnapshotInterval > 0 {
		m.wg.Add(1)
		go m.snapshotLoop(runCtx)
	}

	m.api, err = transport.New(m.ledger, signer, transport.Config{
		AdminToken: adminToken, Issuer: cfg.Issuer, Logger: log, Ready: m.ready,
		RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst, TrustedProxyHeader: cfg.TrustedProxyHeader,
		Metrics: m.metrics,
	})
	if err != nil {
		return err
	}
	if m.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	m.http = &http.Server{
		Handler:           m.api.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.http.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("sessionledger listening", "addr", m.ln.Addr().String(), "issuer", cfg.Issuer, "replay_to_seq", m.replayTo)
	return nil
}

// graceSetting turns the flag's "0 disables" into the ledger's "negative disables".
func graceSetting(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// follow applies the stream to the projection until the context ends. Once
// caught up it records the revocations a crash may have left unannounced and
// starts sweeping expiries.
func (m *Main) follow(ctx context.Context) {
	defer m.wg.Done()
	apply := func(e domain.Event) error {
		if err := m.proj.Apply(e); err != nil {
			return err
		}
		if e.Seq == m.replayTo {
			m.markCaughtUp(ctx)
		}
		return nil
	}
	if m.proj.Applied() >= m.replayTo {
		m.markCaughtUp(ctx)
	}
	// Follow resumes after the last applied event whenever the consumer is
	// lost (a failover, a reconnect); only an undecodable event stops it.
	for backoff := 100 * time.Millisecond; ; {
		err := m.client.Follow(ctx, m.proj.Applied(), apply)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, eventstore.ErrUndecodable) {
			m.Logger.Error("projection stopped: the ledger cannot answer until restarted", "err", err)
			m.proj.Fail(err)
			return
		}
		m.Logger.Warn("projection: following the stream again", "after_seq", m.proj.Applied(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (m *Main) markCaughtUp(ctx context.Context) {
	m.readyMu.Lock()
	m.caughtUp = true
	m.readyMu.Unlock()
	m.Logger.Info("projection caught up", "seq", m.proj.Applied(), "live_sessions", m.proj.LiveSessions())
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.ledger.CompletePendingRevocations(ctx)
		m.ledger.Sweep(ctx, m.Config.SweepInterval)
	}()
}

// ready is nil once the projection has applied every event that was in the
// stream at start.
func (m *Main) ready() error {
	if err := m.proj.Err(); err != nil {
		return errors.New("projection stopped")
	}
	m.readyMu.Lock()
	defer m.readyMu.Unlock()
	if !m.caughtUp {
		return fmt.Errorf("replaying: applied %d of %d events", m.proj.Applied(), m.replayTo)
	}
	return nil
}

// restore returns the projection from the stored snapshot when there is a
// usable one, or an empty projection to replay the stream into.
func (m *Main) restore(ctx context.Context) *projections.Sessions {
	log := m.Logger
	snaps, err := m.client.Snapshots(ctx, eventstore.Config{Replicas: m.Config.Replicas})
	if err != nil {
		log.Warn("snapshots unavailable; replaying the stream from the start", "err", err)
		return projections.NewSessions(log)
	}
	m.snapshots = snaps
	start := time.Now()
	data, err := snaps.Latest(ctx)
	if err != nil || data == nil {
		if err != nil {
			log.Warn("snapshot ignored; replaying the stream from the start", "err", err)
		}
		return projections.NewSessions(log)
	}
	p, err := projections.RestoreSessions(data, log)
	switch {
	case err != nil:
		log.Warn("snapshot ignored; replaying the stream from the start", "err", err)
		return projections.NewSessions(log)
	case p.Applied() > m.replayTo:
		log.Warn("snapshot ignored: it covers more events than the stream holds; replaying from the start", "snapshot_seq", p.Applied(), "stream_seq", m.replayTo)
		return projections.NewSessions(log)
	}
	log.Info("projection restored from snapshot", "seq", p.Applied(), "live_sessions", p.LiveSessions(), "bytes", len(data), "duration_ms", time.Since(start).Milliseconds())
	return p
}

// snapshotLoop writes a snapshot when enough events were applied since the
// stored one (whichever instance stored it).
func (m *Main) snapshotLoop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.Config.SnapshotInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m.ready() != nil {
			continue
		}
		stored, err := m.snapshots.LatestSeq(ctx)
		if err != nil || m.proj.Applied() < stored+m.Config.SnapshotMinEvents {
			continue
		}
		start := time.Now()
		data, seq := m.proj.Snapshot()
		encoded := time.Since(start)
		if err := m.snapshots.Save(ctx, seq, data); err != nil {
			m.Logger.Warn("snapshot not saved", "err", err)
			continue
		}
		m.Logger.Info("snapshot saved", "seq", seq, "bytes", len(data), "encode_ms", encoded.Milliseconds(), "duration_ms", time.Since(start).Milliseconds())
	}
}

// Close shuts down gracefully: HTTP first, then the projection, then NATS.
func (m *Main) Close() error {
	m.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if m.http != nil {
			_ = m.http.Shutdown(ctx)
		}
		if m.cancel != nil {
			m.cancel()
		}
		m.wg.Wait()
		if m.client != nil {
			m.client.Close(ctx)
		}
		if m.embedded != nil {
			m.embedded.Shutdown()
		}
	})
	return nil
}
