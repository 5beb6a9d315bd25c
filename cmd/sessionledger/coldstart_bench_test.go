package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/secrets"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/eventstore/embedded"
)

// benchEvents is the stream size for cold-start benchmarks
// (SESSIONLEDGER_BENCH_EVENTS, default 100 000).
func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("SESSIONLEDGER_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// seedStream writes n events into the stream under dataDir: sessions issued,
// then each rotated four times, as a busy ledger would have recorded them.
func seedStream(tb testing.TB, dataDir string, n int) {
	tb.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: filepath.Join(dataDir, "jetstream")})
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Shutdown()
	conn, err := srv.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Store(context.Background(), eventstore.Config{}); err != nil {
		tb.Fatal(err)
	}
	// Tagged with the data dir's keys, as the ledger that starts on it
	// will check.
	keys, err := secrets.LoadOrCreate(dataDir)
	if err != nil {
		tb.Fatal(err)
	}
	tags, err := integrity.NewTagKeys(keys.TagKeyID, map[string][]byte{keys.TagKeyID: keys.TagKey})
	if err != nil {
		tb.Fatal(err)
	}
	js, err := jetstream.New(conn.NATS(), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		tb.Fatal(err)
	}
	sessions := max(n/5, 1)
	ids := make([]string, sessions)
	t0 := time.Now().Add(-time.Hour)
	digest := domain.Digest{KeyID: "d"}
	policy, _ := domain.Preset(domain.PolicyConsumer)
	written := 0
	last := make([]uint64, sessions) // each session has a user of its own: its last event
	for round := 0; written < n; round++ {
		for i := 0; i < sessions && written < n; i++ {
			var p domain.Payload
			if round == 0 {
				ids[i] = ulid.Make().String()
				p = domain.SessionIssued{UserID: fmt.Sprintf("user-%d", i), Policy: policy,
					Device: domain.Device{IP: "203.0.113.7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", Name: "laptop"}, RefreshToken: digest}
			} else {
				p = domain.SessionRotated{Generation: uint32(round), RefreshToken: digest}
			}
			e := domain.Event{ID: ulid.Make().String(), Time: t0.Add(time.Duration(written) * time.Millisecond), SessionID: ids[i],
				UserKey: fmt.Sprintf("%032x", i), Data: p}
			expect := last[i]
			e.Expect = &expect
			b, err := domain.EncodeEvent(e)
			if err != nil {
				tb.Fatal(err)
			}
			sum := sha256.Sum256(b)
			// One connection keeps the order: this message is stored at
			// written+1, and enforces its expectation as the ledger's do.
			last[i] = uint64(written + 1)
			msg := &nats.Msg{Subject: eventstore.SessionSubject(e), Data: b, Header: nats.Header{integrity.TagHeader: {tags.Tag(sum)},
				jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(*e.Expect, 10)}, jetstream.ExpectedLastSubjSeqSubjHeader: {eventstore.ExpectFilter(e)}}}
			if _, err := js.PublishMsgAsync(msg); err != nil {
				tb.Fatal(err)
			}
			written++
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		tb.Fatal("seeding did not complete")
	}
}

// timeToReady starts a ledger on dataDir and returns how long it took to be ready.
func timeToReady(tb testing.TB, dataDir string, mutate func(*Config)) (time.Duration, *Main) {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir, cfg.AdminToken, cfg.Issuer = "127.0.0.1:0", "", dataDir, testAdminToken, "http://ledger.test"
	cfg.SnapshotInterval = 0
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.complete(); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if err := m.WaitReady(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start), m
}

// BenchmarkColdStart measures process start to ready with a stream of
// SESSIONLEDGER_BENCH_EVENTS events: by replaying the whole stream, and from a
// snapshot.
func BenchmarkColdStart(b *testing.B) {
	n := benchEvents()
	dir := b.TempDir()
	seedStream(b, dir, n)
	// The reference: an ordered consumer reading the same stream, doing nothing
	// with the messages.
	b.Run(fmt.Sprintf("bare-read/events=%d", n), func(b *testing.B) {
		srv, err := embedded.Start(embedded.Config{StoreDir: filepath.Join(dir, "jetstream")})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Shutdown()
		nc, err := nats.Connect("", nats.InProcessServer(srv.Server))
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		for i := 0; i < b.N; i++ {
			feed, err := eventstore.NewFeed(context.Background(), nc)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			read := 0
			if err := feed.Replay(context.Background(), nil, time.Time{}, nil, func(uint64, string, []byte) error { read++; return nil }); err != nil || read != n {
				b.Fatalf("read %d of %d: %v", read, n, err)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		}
	})
	b.Run(fmt.Sprintf("replay/events=%d", n), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			d, m := timeToReady(b, dir, nil)
			b.ReportMetric(d.Seconds(), "s-to-ready")
			b.ReportMetric(float64(n)/d.Seconds(), "events/s")
			m.Close()
		}
	})
	// Write a snapshot, then start from it.
	_, m := timeToReady(b, dir, func(c *Config) { c.SnapshotInterval, c.SnapshotMinEvents = 10*time.Millisecond, 1 })
	poll.Until(b, 5*time.Minute, func() error {
		if seq := m.snapshotSeq(b); seq < uint64(n) {
			return fmt.Errorf("snapshot covers %d of %d events", seq, n)
		}
		return nil
	})
	m.Close()
	b.Run(fmt.Sprintf("snapshot/events=%d", n), func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			d, m := timeToReady(b, dir, nil)
			b.ReportMetric(d.Seconds(), "s-to-ready")
			m.Close()
		}
	})
}

// BenchmarkAuditVerify measures "sessionledger audit verify" over a stream of
// SESSIONLEDGER_BENCH_EVENTS events: read, decode, chain and transition checks.
func BenchmarkAuditVerify(b *testing.B) {
	n := benchEvents()
	dir := b.TempDir()
	seedStream(b, dir, n)
	srv, err := embedded.Start(embedded.Config{StoreDir: filepath.Join(dir, "jetstream"), Listen: "127.0.0.1:-1"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var out strings.Builder
		if err := run(context.Background(), []string{"audit", "verify", "--nats-url", srv.ClientURL()}, &out, io.Discard); err != nil {
			b.Fatalf("%v\n%s", err, out.String())
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
	}
}
