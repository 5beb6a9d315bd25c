package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/eventstore"
)

// snapshotAfter writes a snapshot as soon as n events were applied since the last.
func snapshotAfter(n uint64) func(*Config) {
	return func(c *Config) { c.SnapshotInterval, c.SnapshotMinEvents = 20*time.Millisecond, n }
}

// snapshotLookups counts, from now on, the looks at the stored snapshot on h's
// NATS. The snapshot loop takes one on every tick once the ledger is ready
// (Snapshots.LatestSeq), and nats.go's object store reads an object's info
// with a direct get of its meta subject, which a plain subscriber sees too.
func snapshotLookups(t *testing.T, h *ledgerHarness) func() int {
	t.Helper()
	nc := h.insiderConn() // the ledger's own requests, in its own account
	var n atomic.Int64
	if _, err := nc.Subscribe("$JS.API.DIRECT.GET.OBJ_"+eventstore.SnapshotBucket+".>", func(*nats.Msg) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int { return int(n.Load()) }
}

func TestRestartFromSnapshot(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, snapshotAfter(6)) // the six events below, and not the seventh
	a0 := h.issue(`{"user_id":"alice","device":{"name":"laptop"},"claims":{"role":"x"}}`)
	a1 := h.mustRefresh(a0.Refresh)
	a2 := h.mustRefresh(a1.Refresh)
	revoked := h.issue(`{"user_id":"bob"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+revoked.ID, "", http.StatusNoContent)
	h.mustAdmin("POST", "/v1/users/carol/deactivate", "", http.StatusNoContent)
	if covered := h.lastSeq(); covered != 6 {
		t.Fatalf("%d events before the snapshot, want 6", covered)
	}
	poll.For(t, 10*time.Second, func() bool { return h.m.snapshotSeq(t) == 6 }, func() string { return "no snapshot written" })
	lookups := snapshotLookups(t, h)
	late := h.issue(`{"user_id":"dave"}`) // after the snapshot: replayed on top of it
	// Three more ticks of the snapshot loop, so at least two whole ones after
	// the late event was applied: none may write a snapshot for one event.
	since := lookups()
	poll.For(t, 10*time.Second, func() bool { return lookups() >= since+3 },
		func() string {
			return fmt.Sprintf("the snapshot loop looked %d times since the late event", lookups()-since)
		})
	if seq := h.m.snapshotSeq(t); seq != 6 {
		t.Fatalf("snapshot covers %d, want 6", seq)
	}
	h.close()

	h2 := boot(t, dir, nil)
	if !strings.Contains(h2.logs.String(), `"msg":"projection restored from snapshot","seq":6`) {
		t.Fatalf("not restored from the snapshot:\n%s", h2.logs.String())
	}
	if alice := h2.userSessions("alice"); len(alice) != 1 || alice[0]["device"].(map[string]any)["name"] != "laptop" {
		t.Fatalf("alice's session after restore: %v", alice)
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
	js := h.insider() // only the ledger's identity may write the bucket
	os, err := js.ObjectStore(context.Background(), eventstore.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.PutBytes(context.Background(), "projection", []byte("SLSNAP\x09not what this version writes")); err != nil {
		t.Fatal(err)
	}
	h.close()

	h2 := boot(t, dir, nil)
	if !strings.Contains(h2.logs.String(), "snapshot ignored; replaying the stream from the start") {
		t.Fatalf("no log line for the ignored snapshot:\n%s", h2.logs.String())
	}
	h2.mustRefresh(s.Refresh)
}
