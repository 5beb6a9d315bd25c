package projections

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/domain"
)

// filled returns a projection with n live sessions, each issued with device
// metadata and rotated twice. Events go through the JSON codec, as they do
// when read from the stream, so strings are allocated as in production.
func filled(tb testing.TB, n int) *Sessions { return filledUsers(tb, n, 1) }

// filledUsers is filled with perUser sessions for each user.
func filledUsers(tb testing.TB, n, perUser int) *Sessions {
	tb.Helper()
	p := NewSessions(nil)
	policy, _ := domain.Preset(domain.PolicyConsumer)
	digest := domain.Digest{KeyID: "dk1"}
	seq := uint64(0)
	apply := func(e domain.Event) {
		seq++
		e.ID, e.Time, e.Seq = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", time.Now(), seq
		if u, ok := p.User(e.UserKey); ok && u.ChainSeq > 0 { // chained as the ledger writes
			e.Prev = u.LastDigest[:]
		}
		b, err := domain.EncodeEvent(e)
		if err != nil {
			tb.Fatal(err)
		}
		d, err := domain.DecodeEvent(b)
		if err != nil {
			tb.Fatal(err)
		}
		d.Seq = seq
		if err := p.Apply(d); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		sid := fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7%08d", i)
		ukey := fmt.Sprintf("%032x", i/perUser)
		apply(domain.Event{SessionID: sid, UserKey: ukey, Data: domain.SessionIssued{UserID: fmt.Sprintf("user-%d@example.com", i/perUser), Policy: policy,
			Device: domain.Device{IP: "203.0.113.7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", Name: "laptop"}, RefreshToken: digest}})
		for g := uint32(1); g <= 2; g++ {
			apply(domain.Event{SessionID: sid, UserKey: ukey, Data: domain.SessionRotated{Generation: g, RefreshToken: digest}})
		}
	}
	return p
}

// BenchmarkSnapshot measures encoding (done under the read lock: writers
// wait that long) and restoring a projection of 200 000 live sessions.
func BenchmarkSnapshot(b *testing.B) {
	p := filled(b, 200_000)
	var data []byte
	b.Run("encode/sessions=200000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			data, _ = p.Snapshot(testSealer)
		}
		b.ReportMetric(float64(len(data)), "bytes")
	})
	b.Run("restore/sessions=200000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := RestoreSessions(data, testSealer, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSnapshotWriterStall measures the longest time an Apply waits while
// a snapshot of 200 000 sessions is encoded: the pause refreshes see.
func BenchmarkSnapshotWriterStall(b *testing.B) {
	p := filled(b, 200_000)
	stop := make(chan struct{})
	worst := make(chan time.Duration)
	go func() {
		var max time.Duration
		seq := p.Applied()
		for {
			select {
			case <-stop:
				worst <- max
				return
			default:
			}
			seq++
			start := time.Now()
			_ = p.Apply(link(p, domain.Event{Seq: seq, Time: time.Now(), UserKey: "stall", Data: domain.UserReactivated{UserID: "x"}}))
			if d := time.Since(start); d > max {
				max = d
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for i := 0; i < b.N; i++ {
		p.Snapshot(testSealer)
	}
	close(stop)
	b.ReportMetric(float64((<-worst).Microseconds())/1000, "max-apply-wait-ms")
}

// BenchmarkHeapPerSession measures the heap the projection holds per live
// session (each issued with device metadata and rotated twice), with 100 000
// sessions, or SESSIONLEDGER_BENCH_SESSIONS.
func BenchmarkHeapPerSession(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("SESSIONLEDGER_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	for _, perUser := range []int{1, 2} {
		b.Run(fmt.Sprintf("sessions=%d/per-user=%d", n, perUser), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				p := filledUsers(b, n, perUser)
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/session")
				runtime.KeepAlive(p)
			}
		})
	}
}

// BenchmarkApply applies rotations to 100 000 live sessions, as the follower
// does on the refresh path.
func BenchmarkApply(b *testing.B) {
	const n = 100_000
	p := filled(b, n)
	seq := p.Applied()
	gen := make([]uint32, n)
	for i := range gen {
		gen[i] = 2
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7%08d", i)
	}
	// Each event continues its user's chain, as the ledger writes them; the
	// chain heads are kept here so that the loop measures Apply alone.
	keys := make([]string, n)
	heads := make([][32]byte, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%032x", i)
		u, _ := p.User(keys[i])
		heads[i] = u.LastDigest
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % n
		gen[k]++
		seq++
		e := domain.Event{Seq: seq, Time: now, SessionID: ids[k], UserKey: keys[k], Prev: heads[k][:], Data: domain.SessionRotated{Generation: gen[k]}}
		binary.BigEndian.PutUint64(e.Digest[:], seq)
		if err := p.Apply(e); err != nil {
			b.Fatal(err)
		}
		heads[k] = e.Digest
	}
	if p.Refused() != 0 {
		b.Fatalf("%d events refused", p.Refused())
	}
}

// BenchmarkMemoryPerEndedUser measures what the projection keeps for a user
// whose sessions have all ended: the chain head that refuses a genuine event
// replayed later.
func BenchmarkMemoryPerEndedUser(b *testing.B) {
	const n = 100_000
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		p := NewSessions(nil)
		policy, _ := domain.Preset(domain.PolicyConsumer)
		seq := uint64(0)
		for u := 0; u < n; u++ {
			sid := fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7%08d", u)
			key := fmt.Sprintf("%032x", u)
			for _, d := range []domain.Payload{domain.SessionIssued{UserID: key, Policy: policy}, domain.SessionRevoked{Reason: domain.ReasonSignedOut}} {
				seq++
				if err := p.Apply(link(p, domain.Event{ID: "E", Seq: seq, Time: time.Now(), SessionID: sid, UserKey: key, Data: d})); err != nil {
					b.Fatal(err)
				}
			}
		}
		if p.LiveSessions() != 0 || p.Refused() != 0 {
			b.Fatalf("live %d, refused %d", p.LiveSessions(), p.Refused())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/user")
		runtime.KeepAlive(p)
	}
}
