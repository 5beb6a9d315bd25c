package ledger_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
)

// TestAnInstanceBehindOnTokenKeysReadsThemFirst: instance A rotates the
// refresh-token keys and hands out a token sealed under the new key;
// instance B, which has not read that key yet, is given the token. B reads
// the keys again (ResolveTokenKey), because the session's recorded digest
// names a key it does not hold, and then refreshes, introspects and signs
// out with it as A would. A token with a forged tag is refused all the same
// (what B reads again is decided by the recorded digest, not the token).
func TestAnInstanceBehindOnTokenKeysReadsThemFirst(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := context.Background()
	old := ledgertest.Keys.Token
	rotated := domain.TokenKeys{DigestKeyID: "d2", DigestKey: bytes.Repeat([]byte{5}, 32), SuccessorKey: bytes.Repeat([]byte{6}, 32),
		Older: []domain.TokenKey{{ID: old.DigestKeyID, DigestKey: old.DigestKey, SuccessorKey: old.SuccessorKey}}}

	a := ledgertest.New(t, srv, "https://ledger.test", "api", ledger.Config{})
	var resolved atomic.Int32
	var b *ledgertest.Ledger
	b = ledgertest.New(t, srv, "https://ledger.test", "api", ledger.Config{
		ResolveTokenKey: func(_ context.Context, id string) bool {
			resolved.Add(1)
			if id != "d2" {
				return false
			}
			b.SetTokenKeys(rotated)
			return true
		},
	})

	p, err := a.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	a.SetTokenKeys(rotated)
	next, err := a.Refresh(ctx, p.RefreshToken) // sealed and digested under d2
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Proj.WaitApplied(ctx, a.Proj.Applied()); err != nil {
		t.Fatal(err)
	}

	forged := []byte(next.RefreshToken)
	forged[len(forged)-2] ^= 1 // in the tag
	if _, err := b.Refresh(ctx, string(forged)); err == nil {
		t.Fatal("a token with a forged tag refreshed")
	}
	in, err := b.Introspect(ctx, next.RefreshToken)
	if err != nil || !in.Active {
		t.Fatalf("B introspects the token sealed under a key it had not read: %+v %v", in, err)
	}
	if resolved.Load() == 0 {
		t.Fatal("B never read the keys again")
	}
	again, err := b.Refresh(ctx, next.RefreshToken)
	if err != nil {
		t.Fatalf("B refreshes the token sealed under a key it had not read: %v", err)
	}
	if err := b.SignOut(ctx, again.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Refresh(ctx, again.RefreshToken); err == nil {
		t.Fatal("the session B signed out still refreshes on A")
	}
}
