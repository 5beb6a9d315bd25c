package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/eventstore"
)

// ReferenceStream is the scratch stream the append reference writes to; it
// is deleted afterwards (the ledger's own stream is never touched).
const ReferenceStream = "SESSIONLEDGER_BENCH_REFERENCE"

// ReferenceAppends measures the bare JetStream append a refresh makes: the
// same storage and replicas as the ledger's stream, a payload of the same
// size, a Nats-Msg-Id, and the same expected-last-sequence header on a
// per-client subject filter, from clients concurrent publishers for d. It
// returns the appends that succeeded and their rate.
func ReferenceAppends(ctx context.Context, conn *eventstore.Conn, clients int, d time.Duration, payload int) (int, float64, error) {
	js, err := jetstream.New(conn.NATS())
	if err != nil {
		return 0, 0, err
	}
	replicas := 1
	if s, err := js.Stream(ctx, eventstore.StreamName); err == nil {
		replicas = s.CachedInfo().Config.Replicas
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ReferenceStream, Subjects: []string{"sessionledger-bench.>"}, Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
		return 0, 0, fmt.Errorf("bench: reference stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), ReferenceStream) }()
	data := make([]byte, payload)
	for i := range data {
		data[i] = 'x'
	}
	var wg sync.WaitGroup
	counts := make([]int, clients)
	errs := make([]error, clients)
	start := time.Now()
	deadline := start.Add(d)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			filter := "sessionledger-bench." + strconv.Itoa(c) + ".>"
			subject := "sessionledger-bench." + strconv.Itoa(c) + ".rotated"
			var last uint64
			for n := 0; time.Now().Before(deadline); n++ {
				ack, err := js.Publish(ctx, subject, data, jetstream.WithMsgID(strconv.Itoa(c)+"-"+strconv.Itoa(n)),
					jetstream.WithExpectLastSequenceForSubject(last, filter))
				if err != nil {
					errs[c] = err
					return
				}
				last = ack.Sequence
				counts[c]++
			}
		}(c)
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	return total, float64(total) / time.Since(start).Seconds(), errors.Join(errs...)
}
