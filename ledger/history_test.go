package ledger_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/ledger"
)

// TestHistoryEndsWithTheCutOff: a session ended by a deactivation has that
// event last in its history, and the user's later events (a reactivation, a
// revoke-all) are not the session's.
func TestHistoryEndsWithTheCutOff(t *testing.T) {
	_, _, in := setup(t, 0)
	ctx := context.Background()
	a, err := in.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Refresh(ctx, a.RefreshToken); err != nil {
		t.Fatal(err)
	}
	signedOut, err := in.Issue(ctx, ledger.IssueRequest{UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.SignOut(ctx, signedOut.RefreshToken); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func(context.Context, string) error{in.Deactivate, in.Reactivate, in.RevokeUser} {
		if err := step(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		sid  string
		want []domain.EventType
	}{
		{a.SessionID, []domain.EventType{domain.TypeSessionIssued, domain.TypeSessionRotated, domain.TypeUserDeactivated}},
		{signedOut.SessionID, []domain.EventType{domain.TypeSessionIssued, domain.TypeSessionRevoked}},
	} {
		if got := history(t, in, tc.sid); !slices.Equal(got, tc.want) {
			t.Errorf("history of %s: %v, want %v", tc.sid, got, tc.want)
		}
	}
	for _, id := range []string{"01JD3Z9V6Q4Q4WJ5X7K8M9N0PZ", "ledger.>", ""} {
		if _, err := in.History(ctx, id); !errors.Is(err, domain.ErrSessionNotFound) {
			t.Errorf("History(%q): %v, want ErrSessionNotFound", id, err)
		}
	}
}
