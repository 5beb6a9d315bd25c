package ledger

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stepLookup is a lookup the test releases one at a time; each returns how
// many lookups had started, so a read can tell which one served it.
type stepLookup struct {
	started atomic.Uint64
	release chan struct{}
	running chan uint64 // the number of each lookup as it starts
}

func newStepLookup() *stepLookup {
	return &stepLookup{release: make(chan struct{}), running: make(chan uint64, 100)}
}

func (l *stepLookup) lookup(ctx context.Context) (uint64, error) {
	n := l.started.Add(1)
	l.running <- n
	select {
	case <-l.release:
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// TestReadBarrierNeverServesAReadWithAnEarlierLookup: a read that asks while
// a lookup is in flight waits for the next one, and every read that asked
// meanwhile shares that next one.
func TestReadBarrierNeverServesAReadWithAnEarlierLookup(t *testing.T) {
	l := newStepLookup()
	b := &readBarrier{lookup: l.lookup, timeout: time.Minute}
	ctx := context.Background()

	first := make(chan uint64)
	go func() { seq, _ := b.wait(ctx); first <- seq }()
	if n := <-l.running; n != 1 {
		t.Fatalf("lookup %d started first", n)
	}
	// Lookup 1 is in flight: these reads began after it started.
	const later = 20
	var wg sync.WaitGroup
	got := make([]uint64, later)
	for i := range later {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], _ = b.wait(ctx) }()
	}
	for joined := 0; joined < later; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		if b.next != nil {
			joined = b.next.readers
		}
		b.mu.Unlock()
	}
	l.release <- struct{}{}
	if seq := <-first; seq != 1 {
		t.Fatalf("the first read got lookup %d", seq)
	}
	if n := <-l.running; n != 2 {
		t.Fatalf("lookup %d started second", n)
	}
	l.release <- struct{}{}
	wg.Wait()
	for i, seq := range got {
		if seq != 2 {
			t.Fatalf("read %d, begun while lookup 1 was in flight, was served by lookup %d", i, seq)
		}
	}
	if n := l.started.Load(); n != 2 {
		t.Fatalf("%d lookups for %d reads in two rounds, want 2", n, later+1)
	}
}

// TestReadBarrierDeadline: a read leaves at its own deadline while the
// lookup hangs, and a lookup error reaches the reads it served.
func TestReadBarrierDeadline(t *testing.T) {
	l := newStepLookup()
	b := &readBarrier{lookup: l.lookup, timeout: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := b.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	// A read that has no deadline of its own is served by the next lookup,
	// which hangs too and ends at the barrier's own timeout, with its error.
	if _, err := b.wait(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read served by a lookup that timed out: %v", err)
	}
}
