package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/eventstore"
)

// snapshotAfter writes a snapshot as soon as n events were applied since the last.
func snapshotAfter(n uint64) func(*Config) {
	return func(c *Config) { c.SnapshotInterval, c.SnapshotMinEvents = 20*time.Millisecond, n }
}

func TestRestartFromSnapshot(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, snapshotAfter(6)) // the six events below, and not the seventh
	a0 := h.issue(`{"user_id":"alice","device":{"name":"laptop"},"claims":{"role":"x"}}`)
	a1 := h.mustRefresh(a0.Refresh)
	a2 := h.mustRefresh(a1.Refresh)
	revoked := h.issue(`{"user_id":"bob"}`)
	h.admin("DELETE", "/v1/sessions/"+revoked.ID, "")
	h.admin("POST", "/v1/users/carol/deactivate", "")
	if covered := h.lastSeq(); covered != 6 {
		t.Fatalf("%d events before the snapshot, want 6", covered)
	}
	poll.For(t, 10*time.Second, func() bool { return h.m.snapshotSeq(t) == 6 }, func() string { return "no snapshot written" })
	late := h.issue(`{"user_id":"dave"}`) // after the snapshot: replayed on top of it
	time.Sleep(100 * time.Millisecond)    // several snapshot ticks: none may cover it
	if seq := h.m.snapshotSeq(t); seq != 6 {
		t.Fatalf("snapshot covers %d, want 6", seq)
	}
	h.close()

	h2 := boot(t, dir, nil)
	if !strings.Contains(h2.logs.String(), `"msg":"projection restored from snapshot","seq":6`) {
		t.Fatalf("not restored from the snapshot:\n%s", h2.logs.String())
	}
	if _, body := h2.admin("GET", "/v1/users/alice/sessions", ""); len(body["sessions"].([]any)) != 1 ||
		body["sessions"].([]any)[0].(map[string]any)["device"].(map[string]any)["name"] != "laptop" {
		t.Fatalf("alice's session after restore: %v", body)
	}
	h2.wantInvalidGrant(revoked.Refresh)
	if st, _ := h2.admin("POST", "/v1/sessions", `{"user_id":"carol"}`); st != 409 {
		t.Fatalf("deactivation lost in the snapshot: %d", st)
	}
	h2.mustRefresh(late.Refresh)
	a3 := h2.mustRefresh(a2.Refresh)
	claims, _ := verifyAccessToken(t, jwksKeys(t, h2), a3.Access)
	if claims["role"] != "x" {
		t.Fatalf("custom claims lost in the snapshot: %v", claims)
	}
	h2.wantInvalidGrant(a0.Refresh) // rotated out before the snapshot: reuse
	h2.wantInvalidGrant(a3.Refresh)
}

func TestMismatchedSnapshotIsIgnored(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, nil)
	s := h.issue(`{"user_id":"alice"}`)
	// Something else (another version, a damaged copy) sits where the snapshot goes.
	nc, err := nats.Connect(h.m.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	os, err := js.ObjectStore(context.Background(), eventstore.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.PutBytes(context.Background(), "projection", []byte("SLSNAP\x09not what this version writes")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	h.close()

	h2 := boot(t, dir, nil)
	if !strings.Contains(h2.logs.String(), "snapshot ignored; replaying the stream from the start") {
		t.Fatalf("no log line for the ignored snapshot:\n%s", h2.logs.String())
	}
	h2.mustRefresh(s.Refresh)
}
