// Package ledgertest builds a ledger on a real in-process JetStream for tests:
// its store, the production follower keeping its projection, a signer and
// fixed test keys.
package ledgertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/follower"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/projections"
)

// SigningKey signs the test ledgers' access tokens.
var SigningKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

// Keys are the test ledgers' token and subject keys.
var Keys = ledger.Keys{
	Token:      domain.TokenKeys{DigestKeyID: "d1", DigestKey: bytes.Repeat([]byte{1}, 32), SuccessorKey: bytes.Repeat([]byte{2}, 32)},
	SubjectKey: bytes.Repeat([]byte{3}, 32),
}

// TagKeys tag the test ledgers' events and seal their snapshots.
var TagKeys = func() *integrity.TagKeys {
	k, err := integrity.NewTagKeys("t1", map[string][]byte{"t1": bytes.Repeat([]byte{4}, 32)})
	if err != nil {
		panic(err)
	}
	return k
}()

// Ledger is a ledger with the parts a test may look at.
type Ledger struct {
	*ledger.Ledger
	Proj     *projections.Sessions
	Store    *eventstore.Store
	Signer   *accesstoken.Signer
	Follower *follower.Follower
}

// New builds a ledger on srv for issuer and audience; its projection follows
// the stream until the test ends.
func New(tb testing.TB, srv *natstest.Server, issuer, audience string, cfg ledger.Config) *Ledger {
	tb.Helper()
	st, err := eventstore.Open(context.Background(), srv.Connect(tb), eventstore.Config{Tags: TagKeys})
	if err != nil {
		tb.Fatal(err)
	}
	f, err := follower.New(context.Background(), follower.Config{Stream: st})
	if err != nil {
		tb.Fatal(err)
	}
	f.Start()
	tb.Cleanup(f.Close)
	proj := f.Projection()
	signer, err := accesstoken.NewSigner(issuer, audience, accesstoken.NewEd25519Key(SigningKey))
	if err != nil {
		tb.Fatal(err)
	}
	return &Ledger{Ledger: ledger.New(st, proj, signer, Keys, cfg), Proj: proj, Store: st, Signer: signer, Follower: f}
}
