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
	"github.com/sessionledger/sessionledger/follower"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/metrics"
	"github.com/sessionledger/sessionledger/secrets"
	"github.com/sessionledger/sessionledger/transport"
)

// Main is a running ledger: embedded NATS (unless --nats-url), the stream,
// the projection following it, and the HTTP API. Run starts it; Close stops
// it. It only wires: the runtime policy is in follower, ledger and transport.
type Main struct {
	Config Config
	Logger *slog.Logger

	embedded *embedded.Embedded
	conn     *eventstore.Conn
	store    *eventstore.Store
	follower *follower.Follower
	ledger   *ledger.Ledger
	api      *transport.Server
	http     *http.Server
	ln       net.Listener

	wg        sync.WaitGroup
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

// WaitReady blocks until the projection has caught up with the stream (or has
// stopped, or ctx ends).
func (m *Main) WaitReady(ctx context.Context) error { return m.follower.WaitReady(ctx) }

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
	defaultPolicy, err := domain.Preset(cfg.DefaultPolicy)
	if err != nil {
		return err
	}
	signer, err := accesstoken.NewSigner(cfg.Issuer, cfg.Audience, accesstoken.NewEd25519Key(keys.SigningKey))
	if err != nil {
		return err
	}

	if err := m.connect(); err != nil {
		return err
	}
	streamCfg := eventstore.Config{Replicas: cfg.Replicas}
	if m.store, err = m.conn.Store(ctx, streamCfg); err != nil {
		return err
	}
	snapshots, err := m.store.Snapshots(ctx, streamCfg)
	if err != nil {
		log.Warn("snapshots unavailable; replaying the stream from the start", "err", err)
	}
	fcfg := follower.Config{
		Stream: m.store, SnapshotInterval: cfg.SnapshotInterval, SnapshotMinEvents: cfg.SnapshotMinEvents, Logger: log,
		CaughtUp: func(ctx context.Context) {
			m.ledger.CompletePendingRevocations(ctx)
			m.ledger.Sweep(ctx, cfg.SweepInterval)
		},
	}
	if snapshots != nil {
		fcfg.Snapshots = snapshots
	}
	if m.follower, err = follower.New(ctx, fcfg); err != nil {
		return err
	}
	proj := m.follower.Projection()
	mets := metrics.New(metrics.State{
		LiveSessions: proj.LiveSessions,
		ProjectionLag: func() (uint64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			applied := proj.Applied()
			last, err := m.store.LastSeq(ctx)
			if err != nil || last <= applied {
				return 0, err
			}
			return last - applied, nil
		},
	})
	m.store.OnRetry = mets.AppendRetry
	m.ledger = ledger.New(m.store, proj, signer, ledger.Keys{
		Token:      domain.TokenKeys{DigestKeyID: keys.DigestKeyID, DigestKey: keys.DigestKey, SuccessorKey: keys.SuccessorKey},
		SubjectKey: keys.SubjectKey,
	}, ledger.Config{ReuseGrace: graceSetting(cfg.ReuseGrace), DefaultPolicy: defaultPolicy, Now: cfg.Now, Logger: log, OnConflict: mets.AppendConflict})
	m.follower.Start()

	m.api, err = transport.New(m.ledger, signer, transport.Config{
		AdminToken: adminToken, Issuer: cfg.Issuer, Logger: log, Ready: m.follower.Ready,
		RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst, TrustedProxyHeader: cfg.TrustedProxyHeader,
		Metrics: mets,
	})
	if err != nil {
		return err
	}
	return m.listen()
}

// connect starts the embedded nats-server, or dials --nats-url.
func (m *Main) connect() error {
	cfg := m.Config
	if cfg.NATSURL != "" {
		var err error
		m.conn, err = eventstore.Connect(cfg.NATSURL, cfg.NATSAuth, "sessionledger")
		return err
	}
	var err error
	m.embedded, err = embedded.Start(embedded.Config{
		StoreDir: filepath.Join(cfg.DataDir, "jetstream"),
		Listen:   cfg.NATSListen,
		Sync:     cfg.NATSSync,
		Logger:   m.Logger,
	})
	if err != nil {
		return err
	}
	if url := m.embedded.ClientURL(); url != "" {
		m.Logger.Info("embedded NATS listening", "url", url)
	}
	m.conn, err = m.embedded.Connect()
	return err
}

// listen serves the API on --http-addr.
func (m *Main) listen() error {
	var err error
	if m.ln, err = net.Listen("tcp", m.Config.HTTPAddr); err != nil {
		return fmt.Errorf("listen %s: %w", m.Config.HTTPAddr, err)
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
			m.Logger.Error("http server stopped", "err", err)
		}
	}()
	m.Logger.Info("sessionledger listening", "addr", m.ln.Addr().String(), "issuer", m.Config.Issuer, "replay_to_seq", m.follower.ReplayTo())
	return nil
}

// Close shuts down gracefully: HTTP first, then the projection (and the
// sweeper it started), then NATS.
func (m *Main) Close() error {
	m.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if m.http != nil {
			_ = m.http.Shutdown(ctx)
		}
		m.wg.Wait()
		if m.follower != nil {
			m.follower.Close()
		}
		if m.conn != nil {
			m.conn.Close(ctx)
		}
		if m.embedded != nil {
			m.embedded.Shutdown()
		}
	})
	return nil
}
