package keyring_test

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/keyring"
)

// applied records what a manager handed out last.
type applied struct {
	mu        sync.Mutex
	active    *accesstoken.Key
	published []string
}

func (a *applied) signing(active *accesstoken.Key, published []*accesstoken.Key) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active, a.published = active, nil
	for _, k := range published {
		a.published = append(a.published, k.ID)
	}
	return nil
}

func (a *applied) get() (*accesstoken.Key, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active, a.published
}

func signingBase(t *testing.T) []keyring.Record {
	t.Helper()
	base := baseRecords()
	k := accesstoken.NewEd25519Key(ed25519.NewKeyFromSeed(make([]byte, 32)))
	der, err := k.MarshalPrivate()
	if err != nil {
		t.Fatal(err)
	}
	base[0].ID, base[0].Secret = k.ID, der
	return base
}

// TestAnAlgorithmChangeOnALedgerInUseIsPrepublished: started with another
// --signing-alg on a ledger that has issued tokens, the manager makes a key
// of the new algorithm that is published at once but signs only after the
// pre-publication time, the old key signing meanwhile; on a ledger that
// never signed, the new key signs at once (the old one stays published, for
// an instance that signed with it before it read the new one).
func TestAnAlgorithmChangeOnALedgerInUseIsPrepublished(t *testing.T) {
	for _, never := range []bool{false, true} {
		t.Run(map[bool]string{false: "in use", true: "never signed"}[never], func(t *testing.T) {
			srv := natstest.StartAccounts(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c, err := keyring.NewCipher(make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			ring := openRingWith(t, ctx, srv.ClientURL(), c, signingBase(t))
			var got applied
			m, err := keyring.NewManager(ring, keyring.Config{
				SigningAlg: accesstoken.ES256, Prepublish: 2 * time.Second, RetireAfter: time.Second,
				NeverSigned: func(context.Context) (bool, error) { return never, nil },
			}, keyring.Targets{
				Signing:    got.signing,
				Token:      func(domain.TokenKeys) {},
				Tag:        func(string, map[string][]byte) error { return nil },
				Checkpoint: func(integrity.CheckpointKey, integrity.PublicKeys) {},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Start(ctx); err != nil {
				t.Fatal(err)
			}
			active, published := got.get()
			if never {
				if active.Alg() != accesstoken.ES256 || len(published) != 2 {
					t.Fatalf("never signed: active %s, published %v; want the ES256 key signing at once, the other still published", active.Alg(), published)
				}
				return
			}
			if active.Alg() != accesstoken.EdDSA || len(published) != 2 {
				t.Fatalf("in use: active %s, published %v; want EdDSA signing and both published", active.Alg(), published)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				active, published = got.get()
				if active.Alg() == accesstoken.ES256 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the ES256 key never took over")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(published) != 2 {
				t.Fatalf("the EdDSA key left the JWKS as the new one took over: %v", published)
			}
		})
	}
}

// TestResolveReadsAKeyTheWatchHasNotDelivered: an instance that meets a key
// id it does not hold (here: it never watched) reads the bucket, hands the
// key out and says it holds it; an id that is nowhere is not held after a
// successful read.
func TestResolveReadsAKeyTheWatchHasNotDelivered(t *testing.T) {
	srv := natstest.StartAccounts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := keyring.NewCipher(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	writer := openRingWith(t, ctx, srv.ClientURL(), c, signingBase(t))

	lagging, err := keyring.New(c, openBucket(t, ctx, srv.ClientURL()), signingBase(t), nil) // no Load, no Watch
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var tagKeys map[string][]byte
	m, err := keyring.NewManager(lagging, keyring.Config{SigningAlg: accesstoken.EdDSA, Prepublish: 2 * time.Second}, keyring.Targets{
		Tag: func(_ string, keys map[string][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			tagKeys = keys
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	rec, _, err := writer.Rotate(ctx, keyring.Tag, "", now, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Resolve(ctx, keyring.Tag, rec.ID) {
		t.Fatal("the new tag key is not held after Resolve")
	}
	mu.Lock()
	_, handed := tagKeys[rec.ID]
	mu.Unlock()
	if !handed {
		t.Fatal("Resolve did not hand the new tag key out")
	}
	if m.Resolve(ctx, keyring.Tag, "tnowhere") {
		t.Fatal("an id that is in no record is held")
	}
}
