package keyring_test

import (
	"context"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/keyring"
)

// TestSETKeyIsMadeOnceAndRotates: the first start of a ledger makes one RS256
// SET key in the bucket, active at once, whatever the access-token
// algorithm; a second manager on the same bucket (another instance) uses the
// same key; a rotation is published at once, signs after the
// pre-publication time, and leaves the old key published.
func TestSETKeyIsMadeOnceAndRotates(t *testing.T) {
	srv := natstest.StartAccounts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := keyring.NewCipher(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*keyring.Manager, *applied) {
		ring := openRingWith(t, ctx, srv.ClientURL(), c, signingBase(t))
		var got applied
		m, err := keyring.NewManager(ring, keyring.Config{SigningAlg: accesstoken.EdDSA, Prepublish: time.Second, RetireAfter: time.Second},
			keyring.Targets{SET: got.signing})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return m, &got
	}
	m1, got1 := start()
	_, got2 := start()
	a1, p1 := got1.get()
	a2, p2 := got2.get()
	if a1 == nil || a1.Alg() != accesstoken.RS256 || len(p1) != 1 {
		t.Fatalf("first instance: active %v, published %v; want one RS256 key", a1, p1)
	}
	if a2 == nil || a2.ID != a1.ID || len(p2) != 1 {
		t.Fatalf("second instance: active %v, published %v; want the first instance's key %s", a2, p2, a1.ID)
	}
	rec, err := m1.Rotate(ctx, keyring.SET)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Alg != accesstoken.RS256 || rec.Gen != 2 {
		t.Fatalf("rotated record: alg %s, gen %d; want RS256, 2", rec.Alg, rec.Gen)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sawPublished := false; ; time.Sleep(20 * time.Millisecond) {
		active, published := got1.get()
		if active.ID == a1.ID && len(published) == 2 {
			sawPublished = true
		}
		if active.ID == rec.ID {
			if !sawPublished {
				t.Fatal("the new SET key signed before it was published beside the old one")
			}
			if len(published) != 2 {
				t.Fatalf("after the rotation %d keys are published, want both", len(published))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new SET key never took over")
		}
	}
	var states []string
	for _, s := range m1.Status() {
		if s.Kind == keyring.SET {
			states = append(states, s.State)
		}
	}
	if len(states) != 2 || states[0] != "previous" || states[1] != "active" {
		t.Fatalf("SET key states %v, want [previous active]", states)
	}
}
