package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/eventstore/embedded"
	"github.com/sessionledger/sessionledger/follower"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/keyring"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/metrics"
	"github.com/sessionledger/sessionledger/secrets"
	"github.com/sessionledger/sessionledger/transmit"
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
	// The admin listener, with --admin-addr.
	adminHTTP   *http.Server
	adminLn     net.Listener
	lock        *dataDirLock // the data dir's, with the embedded NATS
	keys        *keyring.Manager
	stopKeys    context.CancelFunc // ends the key bucket watch and the rotation schedule
	keysWatch   <-chan struct{}    // closed once the key bucket watch has stopped
	keysStarted bool
	transmitter *transmit.Transmitter
	// transmitDone is closed once the transmitter's deliveries have
	// stopped (they stop with stopKeys).
	transmitDone chan struct{}

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, log *slog.Logger) *Main {
	return &Main{Config: cfg, Logger: log}
}

// HTTPURL is the base URL the API listens on.
func (m *Main) HTTPURL() string { return "http://" + m.ln.Addr().String() }

// AdminURL is the base URL of the admin API: the admin listener's with
// --admin-addr, HTTPURL otherwise.
func (m *Main) AdminURL() string {
	if m.adminLn != nil {
		return "http://" + m.adminLn.Addr().String()
	}
	return m.HTTPURL()
}

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
// Close. When it fails, it has released what it took (the data dir, the
// ports) before it returns; Close is then harmless.
func (m *Main) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			m.Close() // what was claimed or started is released at once
		}
	}()
	if err := m.claim(); err != nil {
		return err
	}
	cfg := m.Config
	log := m.Logger
	var keys *secrets.Set
	if cfg.Keys != "" {
		keys, err = secrets.Parse([]byte(cfg.Keys))
	} else {
		keys, err = secrets.LoadOrCreate(cfg.DataDir)
	}
	if err != nil {
		return err
	}
	adminTokens, generated, err := secrets.OpenAdminTokens(secrets.AdminTokenConfig{DataDir: cfg.DataDir, Token: cfg.AdminToken, Tokens: cfg.AdminTokens})
	if err != nil {
		return err
	}
	if generated != "" {
		log.Info("there was no admin token: one named default is generated into a file", "path", generated)
	}
	if current, _ := adminTokens.Current(); current != nil {
		log.Info("admin tokens", "names", current.Names()) // names, never tokens
	}
	defaultPolicy, err := domain.Preset(cfg.DefaultPolicy)
	if err != nil {
		return err
	}
	// Generation 0 of every kind of key is keys.json's; the manager hands
	// out the generations in force once the key bucket is read.
	signer, err := accesstoken.NewSigner(cfg.Issuer, cfg.Audience, accesstoken.NewEd25519Key(keys.SigningKey))
	if err != nil {
		return err
	}
	tags, err := integrity.NewTagKeys(keys.TagKeyID, map[string][]byte{keys.TagKeyID: keys.TagKey})
	if err != nil {
		return err
	}
	var checkpointKey atomic.Pointer[integrity.CheckpointKey]
	var checkpointPublic atomic.Pointer[integrity.PublicKeys]
	checkpointKey.Store(&integrity.CheckpointKey{ID: keys.CheckpointKeyID, Private: keys.CheckpointKey})
	checkpointPublic.Store(&integrity.PublicKeys{keys.CheckpointKeyID: keys.CheckpointKey.Public().(ed25519.PublicKey)})
	record, err := readStreamRecord(cfg.DataDir)
	if err != nil {
		return err
	}

	if err := m.connect(); err != nil {
		return err
	}
	streamCfg := eventstore.Config{Replicas: cfg.Replicas, Tags: tags, TrustUntaggedThrough: cfg.TrustUntaggedThrough, MustExist: record != nil}
	if m.store, err = m.conn.Store(ctx, streamCfg); err != nil {
		if errors.Is(err, domain.ErrHistoryLost) {
			return fmt.Errorf("%w (%s records the stream created at %s); restore the stream, or remove that file to start a new, empty ledger on purpose", err, streamRecordPath(cfg.DataDir), record.Created.Format(time.RFC3339Nano))
		}
		return err
	}
	if err := checkStreamRecord(cfg.DataDir, m.store.Created()); err != nil {
		return err
	}
	base, err := keyring.BaseRecords(keys)
	if err != nil {
		return err
	}
	cipher, err := keyring.NewCipher(keys.KeyringKey)
	if err != nil {
		return err
	}
	bucket, err := m.store.KeyBucket(ctx, streamCfg)
	if err != nil {
		return err
	}
	keysCtx, stopKeys := context.WithCancel(context.WithoutCancel(ctx))
	m.stopKeys = stopKeys
	ring, err := keyring.New(cipher, bucket, base, log)
	if err != nil {
		return err
	}
	if err := ring.Load(ctx); err != nil {
		return err
	}
	sets := &transmit.SETSigner{}
	var tokenKeys atomic.Pointer[ledger.Ledger] // the ledger, once it exists, takes the refresh-token keys
	m.keys, err = keyring.NewManager(ring, keyring.Config{
		SigningAlg: cfg.SigningAlg, Rotation: cfg.SigningKeyRotation, Prepublish: cfg.SigningKeyPrepublish,
		RetireAfter: cfg.MaxAccessTokenTTL + cfg.KeyRetireLeeway, Propagation: cfg.KeyPropagation,
		NeverSigned: func(ctx context.Context) (bool, error) {
			last, err := m.store.LastSeq(ctx)
			return last == 0, err
		},
		Now: cfg.Now, Logger: log,
	}, keyring.Targets{
		Signing: func(active *accesstoken.Key, published []*accesstoken.Key) error {
			return signer.SetKeys(active, published...)
		},
		Token: func(k domain.TokenKeys) {
			if l := tokenKeys.Load(); l != nil {
				l.SetTokenKeys(k)
			}
		},
		Tag: tags.Update,
		Checkpoint: func(current integrity.CheckpointKey, public integrity.PublicKeys) {
			checkpointKey.Store(&current)
			checkpointPublic.Store(&public)
		},
		SET: sets.SetKeys,
	})
	if err != nil {
		return err
	}
	tags.OnUnknown(func(id string) { m.keys.Resolve(keysCtx, keyring.Tag, id) })
	if m.keysWatch, err = ring.Watch(keysCtx); err != nil {
		return err
	}
	if err := m.keys.Start(keysCtx); err != nil {
		return err
	}
	m.keysStarted = true
	snapshots, err := m.store.Snapshots(ctx, streamCfg)
	if err != nil {
		log.Warn("snapshots unavailable; replaying the stream from the start", "err", err)
	}
	fcfg := follower.Config{
		Stream: m.store, SnapshotInterval: cfg.SnapshotInterval, SnapshotMinEvents: cfg.SnapshotMinEvents, Logger: log,
		Sealer:      tags,
		Checkpoints: follower.Checkpoints{Interval: cfg.CheckpointInterval, Key: func() integrity.CheckpointKey { return *checkpointKey.Load() }, Append: m.store.AppendCheckpoint},
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
		Refused:      proj.Refused,
		Superseded:   proj.Superseded,
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
	}, ledger.Config{ReuseGrace: graceSetting(cfg.ReuseGrace), RequestTimeout: cfg.RequestTimeout, DefaultPolicy: defaultPolicy, DefaultClientID: cfg.DefaultClientID, Now: cfg.Now, Logger: log, OnConflict: mets.AppendConflict,
		MaxAccessTokenTTL: cfg.MaxAccessTokenTTL,
		ResolveTokenKey:   func(ctx context.Context, id string) bool { return m.keys.Resolve(ctx, keyring.Token, id) }})
	tokenKeys.Store(m.ledger)
	if err := m.keys.Apply(); err != nil { // hands the ledger the refresh-token keys in force
		return err
	}
	m.follower.Start()

	if err := m.startTransmitter(keysCtx, keys, sets, mets); err != nil {
		return err
	}

	clients, err := introspectionClientSource(cfg)
	if err != nil {
		return err
	}
	m.api, err = transport.New(m.ledger, signer, transport.Config{
		IntrospectionClients: clients, SeparateAdmin: cfg.AdminAddr != "",
		AdminTokens: adminTokens, Issuer: cfg.Issuer, Logger: log, Ready: m.follower.Ready,
		RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst, TrustedProxyHeader: cfg.TrustedProxyHeader,
		BrowserOrigins: cfg.BrowserOrigins, Metrics: mets, CheckpointKeys: func() integrity.PublicKeys { return *checkpointPublic.Load() },
		JWKSMaxAge: keyring.JWKSMaxAge(cfg.SigningKeyPrepublish), Keys: m.keys, Transmitter: m.transmitter,
	})
	if err != nil {
		return err
	}
	return m.listen()
}

// startTransmitter starts delivering webhooks and SSF streams, on every
// instance (each endpoint's durable consumer hands a message to one), until
// ctx ends.
func (m *Main) startTransmitter(ctx context.Context, keys *secrets.Set, sets *transmit.SETSigner, mets *metrics.Metrics) error {
	cfg := m.Config
	bucket, err := m.store.DeliveryBucket(ctx)
	if err != nil {
		return err
	}
	sealer, err := transmit.NewSealer(keys.KeyringKey)
	if err != nil {
		return err
	}
	hosts, err := transmit.ParseAllowList(cfg.DeliveryAllowHosts)
	if err != nil {
		return err
	}
	m.transmitter, err = transmit.New(transmit.Config{
		Issuer: cfg.Issuer, Store: m.store, Bucket: bucket, Sealer: sealer, SETs: sets,
		URLs:     transmit.URLPolicy{AllowHosts: hosts, AllowPrivate: cfg.DeliveryAllowLoopback},
		RetryFor: cfg.DeliveryRetryFor, Observer: mets, Logger: m.Logger,
	})
	if err != nil {
		return err
	}
	m.transmitDone = make(chan struct{})
	go func() {
		defer close(m.transmitDone)
		if err := m.transmitter.Run(ctx); err != nil {
			m.Logger.Error("transmit: deliveries stopped", "err", err)
		}
	}()
	return nil
}

// introspectionClientSource is the source of the introspection clients:
// SESSIONLEDGER_INTROSPECTION_CLIENTS when set, the data dir's file
// otherwise (read again when it changes).
func introspectionClientSource(cfg Config) (*secrets.ClientsSource, error) {
	if cfg.IntrospectionClients != nil {
		c, err := secrets.ParseClients([]byte(*cfg.IntrospectionClients), "SESSIONLEDGER_INTROSPECTION_CLIENTS")
		if err != nil {
			return nil, err
		}
		return secrets.FixedClients(c), nil
	}
	return secrets.WatchClients(filepath.Join(cfg.DataDir, secrets.ClientsFile))
}

// keysDone is closed once the key schedule has stopped (nil if it never started).
func (m *Main) keysDone() <-chan struct{} {
	if m.keys == nil || !m.keysStarted {
		return nil
	}
	return m.keys.Done()
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

// listen serves the API on --http-addr, and the admin API on --admin-addr
// when that is set (both bound by claim).
func (m *Main) listen() error {
	if m.adminLn != nil {
		m.adminHTTP = m.serveHTTP(m.adminLn, m.api.AdminHandler())
		m.Logger.Info("admin API listening", "addr", m.adminLn.Addr().String())
	}
	m.http = m.serveHTTP(m.ln, m.api.Handler())
	m.Logger.Info("sessionledger listening", "addr", m.ln.Addr().String(), "issuer", m.Config.Issuer, "replay_to_seq", m.follower.ReplayTo())
	return nil
}

// serveHTTP serves h on ln until Close.
func (m *Main) serveHTTP(ln net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return srv
}

// Close shuts down gracefully: HTTP first, then the projection (and the
// sweeper it started), then NATS.
func (m *Main) Close() error {
	m.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		for _, l := range []struct {
			srv *http.Server
			ln  net.Listener
		}{{m.http, m.ln}, {m.adminHTTP, m.adminLn}} {
			switch {
			case l.srv != nil:
				_ = l.srv.Shutdown(ctx)
			case l.ln != nil:
				_ = l.ln.Close() // bound, never served
			}
		}
		m.wg.Wait()
		if m.stopKeys != nil {
			m.stopKeys() // before the connection closes under the watch
			for _, done := range []<-chan struct{}{m.keysWatch, m.keysDone(), m.transmitDone} {
				if done != nil {
					select {
					case <-done:
					case <-ctx.Done():
					}
				}
			}
		}
		if m.follower != nil {
			m.follower.Close()
		}
		if m.conn != nil {
			m.conn.Close(ctx)
		}
		if m.embedded != nil {
			m.embedded.Shutdown()
		}
		if m.lock != nil {
			_ = m.lock.release()
		}
	})
	return nil
}

// The data dir records which stream the ledger's history is in, so that a
// ledger whose stream has vanished or been replaced refuses to start instead
// of starting empty.
const streamRecordFile = "stream.json"

type streamRecord struct {
	Stream  string    `json:"stream"`
	Created time.Time `json:"created"`
}

func streamRecordPath(dir string) string { return filepath.Join(dir, streamRecordFile) }

// readStreamRecord returns the data dir's record, nil if there is none.
func readStreamRecord(dir string) (*streamRecord, error) {
	b, err := os.ReadFile(streamRecordPath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseStreamRecord(dir, b)
}

func parseStreamRecord(dir string, b []byte) (*streamRecord, error) {
	var r streamRecord
	if err := json.Unmarshal(b, &r); err != nil || r.Created.IsZero() {
		return nil, fmt.Errorf("%s is not a stream record; remove it only if this data dir is to start a new ledger", streamRecordPath(dir))
	}
	return &r, nil
}

// checkStreamRecord compares the opened stream with the data dir's record,
// writing one first if there is none (atomically: an instance sharing the dir
// that wrote it first is compared with instead).
func checkStreamRecord(dir string, created time.Time) error {
	b, err := secrets.ReadOrCreate(dir, streamRecordFile, func() ([]byte, error) {
		return json.Marshal(streamRecord{Stream: eventstore.StreamName, Created: created})
	})
	if err != nil {
		return err
	}
	r, err := parseStreamRecord(dir, b)
	if err != nil {
		return err
	}
	if !r.Created.Equal(created) {
		return fmt.Errorf("%w: the stream %s was created %s, but %s records the one created %s: this is another stream (replaced, or another NATS); restore the original, or remove that file to use this one on purpose",
			domain.ErrHistoryLost, eventstore.StreamName, created.Format(time.RFC3339Nano), streamRecordPath(dir), r.Created.Format(time.RFC3339Nano))
	}
	return nil
}
