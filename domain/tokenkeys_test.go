package domain

import (
	"bytes"
	"testing"
	"time"
)

// TestTokenKeysRotateWithoutLoggingAnyoneOut: after the refresh-token keys
// rotate, a token issued under the old key still refreshes; its successor
// is sealed and digested with the new key; a tolerated retry returns the
// very token handed out; a rotated-out token still revokes the family; and
// a token sealed with a key nobody holds is refused.
func TestTokenKeysRotateWithoutLoggingAnyoneOut(t *testing.T) {
	old := testKeys
	rotated := TokenKeys{DigestKeyID: "d2", DigestKey: bytes.Repeat([]byte{7}, 32), SuccessorKey: bytes.Repeat([]byte{8}, 32),
		Older: []TokenKey{{ID: old.DigestKeyID, DigestKey: old.DigestKey, SuccessorKey: old.SuccessorKey}}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := Policy{Name: "test", AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600}
	grace := 10 * time.Second

	first := old.Seal(token0())
	s := &Session{}
	mustApply(s, Event{SessionID: testSID, UserKey: "u1", Time: t0, Seq: 1,
		Data: SessionIssued{UserID: "alice", Policy: p, RefreshToken: old.Digest(first)}})

	if !rotated.Authentic(first) {
		t.Fatal("a token sealed under the old key is not authentic after the rotation")
	}
	d := DecideRefresh(s, first, rotated, t0.Add(time.Second), grace)
	if d.Outcome != OutcomeRotated {
		t.Fatalf("refresh of a token issued before the rotation: %v (%v)", d.Outcome, d.Err)
	}
	ev := d.Event.(SessionRotated)
	if ev.RefreshToken.KeyID != "d2" {
		t.Fatalf("the successor's digest is under %q, want the new key d2", ev.RefreshToken.KeyID)
	}
	if old.Authentic(d.Token) {
		t.Fatal("the successor is sealed with the old key")
	}
	// The successor's secret is derived from the presented token by the key
	// that sealed it: an instance that has not rotated yet agrees on it.
	if got := old.Successor(first); got.Secret != d.Token.Secret {
		t.Fatal("the successor's secret depends on which instance derived it")
	}
	second := d.Token
	mustApply(s, Event{SessionID: testSID, UserKey: "u1", Time: t0.Add(time.Second), Seq: 2, Data: ev})

	// A retry of the first token within grace returns the very token issued.
	retry := DecideRefresh(s, first, rotated, t0.Add(2*time.Second), grace)
	if retry.Outcome != OutcomeTolerated || retry.Token.Encode() != second.Encode() {
		t.Fatalf("retry: %v, same token %v", retry.Outcome, retry.Token.Encode() == second.Encode())
	}
	// The successor refreshes in turn.
	if d := DecideRefresh(s, second, rotated, t0.Add(3*time.Second), grace); d.Outcome != OutcomeRotated {
		t.Fatalf("refresh of the successor: %v (%v)", d.Outcome, d.Err)
	}
	// Past grace the first token is reuse.
	if d := DecideRefresh(s, first, rotated, t0.Add(time.Minute), grace); d.Outcome != OutcomeReused {
		t.Fatalf("reuse of the first token after the rotation: %v", d.Outcome)
	}
	// A token sealed with a key the ledger does not hold is refused.
	stranger := TokenKeys{DigestKeyID: "dx", DigestKey: bytes.Repeat([]byte{9}, 32), SuccessorKey: bytes.Repeat([]byte{9}, 32)}
	if d := DecideRefresh(s, stranger.Successor(first), rotated, t0.Add(3*time.Second), grace); d.Outcome != OutcomeInvalid {
		t.Fatalf("a token sealed with an unknown key: %v", d.Outcome)
	}
	if !rotated.Holds("d1") || !rotated.Holds("d2") || rotated.Holds("dx") {
		t.Fatal("Holds")
	}
}

// TestLegacyTokensAreDerivedByTheFirstKey: an untagged token (issued before
// tags, under the first key) gets the same successor from an instance that
// holds a newer key, pending or current, as from one that holds only the
// first.
func TestLegacyTokensAreDerivedByTheFirstKey(t *testing.T) {
	first := testKeys
	newer := TokenKey{ID: "d2", DigestKey: bytes.Repeat([]byte{7}, 32), SuccessorKey: bytes.Repeat([]byte{8}, 32)}
	pending := TokenKeys{DigestKeyID: first.DigestKeyID, DigestKey: first.DigestKey, SuccessorKey: first.SuccessorKey, Older: []TokenKey{newer}, LegacyKeyID: first.DigestKeyID}
	rotated := TokenKeys{DigestKeyID: newer.ID, DigestKey: newer.DigestKey, SuccessorKey: newer.SuccessorKey,
		Older: []TokenKey{{ID: first.DigestKeyID, DigestKey: first.DigestKey, SuccessorKey: first.SuccessorKey}}, LegacyKeyID: first.DigestKeyID}
	legacy := token0() // untagged
	want := first.Successor(legacy).Secret
	for name, k := range map[string]TokenKeys{"a newer key pending": pending, "a newer key current": rotated} {
		if got := k.Successor(legacy).Secret; got != want {
			t.Errorf("%s: the legacy token's successor differs from the first key's", name)
		}
	}
}
