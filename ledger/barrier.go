package ledger

import (
	"context"
	"sync"
	"time"
)

// A readBarrier tells a read how far the stream reached after the read
// began: a sequence read at the stream leader by a lookup that started after
// the read asked. Once the projection has applied that sequence, the instance
// is as current as any write that returned before the read began, on any
// instance, and may answer from the projection. (Unlike Raft's ReadIndex,
// nothing confirms that the answering leader still leads: nats-server offers
// clients no such read. A leader cut off by a partition answers until it
// steps down; docs/architecture.md says what that window is.)
//
// Reads that ask while a lookup is in flight share the next lookup, so under
// load one round trip serves every read that arrived meanwhile (batched as
// Raft's ReadIndex is); a lookup that started before a read asked never
// serves it, since a write may have returned in between.
type readBarrier struct {
	lookup  func(context.Context) (uint64, error)
	timeout time.Duration // bounds one lookup; each read also has its own deadline

	mu      sync.Mutex
	next    *readRound // the round reads join now; it starts when the running one ends
	running bool
}

// A readRound is one lookup and the reads it serves.
type readRound struct {
	done    chan struct{}
	readers int // how many reads joined it (tests watch it)
	seq     uint64
	err     error
}

// wait returns the stream's last sequence as read after wait was called.
func (b *readBarrier) wait(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &readRound{done: make(chan struct{})}
	}
	r := b.next
	r.readers++
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run looks up one round after another while reads are waiting.
func (b *readBarrier) run() {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		r.seq, r.err = b.lookup(ctx)
		cancel()
		close(r.done)
	}
}
