package verifier_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/verifier"
)

// TestCutOffsByStreamOrderNotClocks: users are revoked all at once by
// instances whose clocks are an hour ahead or behind, and sign in again at
// once on an instance with the right time. Every verifier decides as the
// ledger does, by stream order: each session issued before its user's
// cut-off is refused, each issued after it is accepted, whatever the clocks
// and even within one millisecond.
func TestCutOffsByStreamOrderNotClocks(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	ctx := context.Background()
	skewed := []*ledgertest.Ledger{
		ledgertest.New(t, e.srv, issuer, audience, ledger.Config{Now: func() time.Time { return time.Now().Add(time.Hour) }}),
		ledgertest.New(t, e.srv, issuer, audience, ledger.Config{Now: func() time.Time { return time.Now().Add(-time.Hour) }}),
	}
	const users = 50
	before, after := make([]ledger.TokenPair, users), make([]ledger.TokenPair, users)
	for i := range before {
		before[i] = e.issue(fmt.Sprintf("user-%d", i))
	}
	var wg sync.WaitGroup
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user-%d", i)
			var err error
			if i%3 == 0 {
				err = skewed[i%2].Deactivate(ctx, user)
				if err == nil {
					err = skewed[(i+1)%2].Reactivate(ctx, user)
				}
			} else {
				err = skewed[i%2].RevokeUser(ctx, user)
			}
			if err != nil {
				t.Error(err)
				return
			}
			if after[i], err = e.ledger.Issue(ctx, ledger.IssueRequest{UserID: user}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i := range users {
		eventuallyRevoked(t, v, before[i].AccessToken) // the verifier has every cut-off now
	}
	refused := 0
	for i := range users {
		if _, err := v.Verify(ctx, after[i].AccessToken); err != nil {
			refused++
			t.Errorf("user %d: a session issued after the cut-off is refused: %v", i, err)
		}
	}
	if refused > 0 {
		t.Fatalf("%d of %d sessions issued after their user's cut-off refused", refused, users)
	}
}

// TestTokenWithoutSessionSeq: a token of a ledger older than sid_seq is
// accepted until its user has a cut-off, then refused (it may predate it),
// and a token with a malformed sid_seq does not verify at all.
func TestTokenWithoutSessionSeq(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	ctx := context.Background()
	sign := func(seq uint64) string {
		tok, err := e.signer.Sign(accesstoken.Claims{Subject: "erin", SessionID: "01JAAAAAAAAAAAAAAAAAAAAAAA", SessionSeq: seq, ID: "j", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	e.issue("frank") // so that erin's cut-off is after sequence 1
	old := sign(0)
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("token without sid_seq and no cut-off: %v", err)
	}
	if err := e.ledger.RevokeUser(ctx, "erin"); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, old)
	if _, err := v.Verify(ctx, sign(1<<40)); err != nil {
		t.Fatalf("token with a sid_seq after the cut-off: %v", err)
	}
	if _, err := v.Verify(ctx, sign(1)); !errors.Is(err, verifier.ErrRevoked) {
		t.Fatalf("token with a sid_seq before the cut-off: %v", err)
	}
}

// TestSlowClockCannotShortenARevocation: a ledger instance whose clock is an
// hour behind records a revocation and a revoke-all; the verifier keeps
// refusing the revoked tokens through many prunes, since it counts how long
// to remember them from when it learned of them, not from the event's time.
func TestSlowClockCannotShortenARevocation(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{MaxTokenTTL: time.Hour, PruneInterval: 5 * time.Millisecond})
	ctx := context.Background()
	behind := ledgertest.New(t, e.srv, issuer, audience, ledger.Config{Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	revoked, cut := e.issue("grace"), e.issue("heidi")
	if err := behind.RevokeSession(ctx, revoked.SessionID); err != nil {
		t.Fatal(err)
	}
	if err := behind.RevokeUser(ctx, "heidi"); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, revoked.AccessToken)
	eventuallyRevoked(t, v, cut.AccessToken)
	time.Sleep(50 * time.Millisecond) // ten prunes
	for _, tok := range []string{revoked.AccessToken, cut.AccessToken} {
		if _, err := v.Verify(ctx, tok); !errors.Is(err, verifier.ErrRevoked) {
			t.Fatalf("a revocation recorded by a slow clock was forgotten while its token is live: %v", err)
		}
	}
}
