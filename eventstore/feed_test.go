package eventstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/poll"
)

// TestFeedResumesAfterItsConsumerIsLost: a verifier's revocation feed goes on
// after its consumer disappears (as with a failover or a server restart),
// from the event after the last it delivered: nothing lost, nothing twice.
func TestFeedResumesAfterItsConsumerIsLost(t *testing.T) {
	st, nc, _ := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	feed, err := eventstore.NewFeed(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- feed.Follow(ctx, time.Time{}, func(e domain.Event) {
			mu.Lock()
			got = append(got, e.ID)
			mu.Unlock()
		}, nil, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Follow ended with %v, want context.Canceled", err)
		}
	})
	var last uint64
	revoke := func(id string) {
		t.Helper()
		seq, err := st.Append(ctx, at(ev(id, sid, domain.SessionRevoked{Reason: "x"}), last))
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	waitFor := func(want ...string) {
		t.Helper()
		poll.Until(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("delivered %v, want %v", got, want)
			}
			return nil
		})
	}
	revoke("R1")
	waitFor("R1")

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for name := range stream.ConsumerNames(ctx).Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		deleted++
	}
	if deleted == 0 {
		t.Fatal("the feed has no consumer to lose")
	}
	revoke("R2")
	revoke("R3")
	waitFor("R1", "R2", "R3")
}
