package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/transport"
)

// checkpointed boots a ledger that writes checkpoints every 50 ms, saves its
// checkpoint keys as an auditor would (from the documented URL), and returns
// it with the file's path.
func checkpointed(t *testing.T) (*ledgerHarness, string) {
	t.Helper()
	h := boot(t, "", func(c *Config) { c.CheckpointInterval = 50 * time.Millisecond })
	resp := h.raw("GET", transport.CheckpointKeysPath, "", "", nil)
	if resp.status != http.StatusOK || resp.contentType != "application/jwk-set+json" {
		t.Fatalf("GET %s: %d %s", transport.CheckpointKeysPath, resp.status, resp.contentType)
	}
	keys := filepath.Join(t.TempDir(), "checkpoint-keys.json")
	if err := os.WriteFile(keys, []byte(resp.body), 0o644); err != nil {
		t.Fatal(err)
	}
	return h, keys
}

// waitCovered waits until a checkpoint covers every message but checkpoints,
// and returns the stream's messages then.
func waitCovered(t *testing.T, h *ledgerHarness) []message {
	t.Helper()
	var msgs []message
	poll.Until(t, 10*time.Second, func() error {
		msgs = readStream(t, h)
		last := len(msgs)
		for last > 0 && msgs[last-1].subject == integrity.CheckpointSubject {
			c, err := integrity.DecodeCheckpoint(msgs[last-1].data)
			if err != nil {
				return err
			}
			if c.Covers >= uint64(lastEvent(msgs)) {
				return nil
			}
			last--
		}
		return errors.New("the newest events are not covered by a checkpoint yet")
	})
	return msgs
}

// lastEvent is the 1-based sequence of the last message that is not a checkpoint.
func lastEvent(msgs []message) int {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].subject != integrity.CheckpointSubject {
			return i + 1
		}
	}
	return 0
}

// readStream reads every message of h's stream as a reader (no credentials).
func readStream(t *testing.T, h *ledgerHarness) []message {
	t.Helper()
	feed, err := eventstore.NewFeed(context.Background(), h.nats())
	if err != nil {
		t.Fatal(err)
	}
	var msgs []message
	if err := feed.Replay(context.Background(), nil, time.Time{}, nil, func(_ uint64, subject string, data []byte) error {
		msgs = append(msgs, message{subject, append([]byte(nil), data...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// rechain rewrites every event's expectation from its place in msgs (the
// last message before it under its session's or user's subjects), as
// someone forging a history would: every structural check then passes
// again, and only the checkpoints can tell. (The per-user hash chains of
// earlier versions were as easy to recompute.)
func rechain(t *testing.T, msgs []message) []message {
	t.Helper()
	out := make([]message, len(msgs))
	last := map[string]uint64{}
	for i, m := range msgs {
		out[i] = m
		if m.subject == integrity.CheckpointSubject {
			continue
		}
		e, err := domain.DecodeEvent(m.data)
		if err != nil {
			t.Fatal(err)
		}
		under := eventstore.ExpectFilter(e)
		expect := last[under]
		e.Expect = &expect
		if out[i].data, err = domain.EncodeEvent(e); err != nil {
			t.Fatal(err)
		}
		last[under] = uint64(i + 1)
	}
	return out
}

// problems runs verify with args on the stream at natsURL and returns the
// problems it reports, and its stdout.
func problems(t *testing.T, natsURL string, args ...string) ([]struct {
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}, string, error) {
	t.Helper()
	out, err := auditRun(t, natsURL, append([]string{"verify", "--json"}, args...)...)
	var ps []struct {
		Seq    uint64 `json:"seq"`
		Kind   string `json:"kind"`
		Detail string `json:"detail"`
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var p struct {
			Seq    uint64 `json:"seq"`
			Kind   string `json:"kind"`
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("verify --json line %q: %v", line, err)
		}
		ps = append(ps, p)
	}
	return ps, out, err
}

// TestAuditVerifyWithCheckpoints: with the ledger's checkpoint keys, saved
// from its documented URL, `audit verify` names in copies of a real stream
// each tampering that the per-user digest chains cannot show once they are
// recomputed (a forged event, a dropped, reordered or edited one, a stream
// rewritten from the start), and, given a checkpoint kept from earlier
// (`audit checkpoint`), a truncated or rolled-back stream. Messages after the
// newest checkpoint are counted as not yet covered; without keys verify says
// what it could not check.
func TestAuditVerifyWithCheckpoints(t *testing.T) {
	h, keys := checkpointed(t)
	alice := h.issue(`{"user_id":"alice","device":{"name":"laptop"}}`)
	a1 := h.mustRefresh(alice.Refresh)
	bob := h.issue(`{"user_id":"bob"}`)
	waitCovered(t, h)

	// The auditor keeps a checkpoint now.
	var kept bytes.Buffer
	if err := run(context.Background(), []string{"audit", "checkpoint", "--checkpoint-keys", keys, "--nats-url", h.m.NATSURL()}, &kept, io.Discard); err != nil {
		t.Fatal(err)
	}
	keptCP, err := integrity.DecodeCheckpoint(kept.Bytes())
	if err != nil || keptCP.Seq == 0 {
		t.Fatalf("audit checkpoint printed %q: %v", kept.String(), err)
	}
	keptFile := filepath.Join(t.TempDir(), "kept.json")
	if err := os.WriteFile(keptFile, kept.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	h.mustRefresh(a1.Refresh)
	h.mustAdmin("DELETE", "/v1/sessions/"+bob.ID, "", http.StatusNoContent)
	h.issue(`{"user_id":"carol"}`)
	msgs := waitCovered(t, h)
	// And keeps the newest one too.
	var newest bytes.Buffer
	if err := run(context.Background(), []string{"audit", "checkpoint", "--nats-url", h.m.NATSURL()}, &newest, io.Discard); err != nil {
		t.Fatal(err)
	}
	newestFile := filepath.Join(t.TempDir(), "newest.json")
	if err := os.WriteFile(newestFile, newest.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// The live stream and an exact copy verify, proven to the last event.
	for name, url := range map[string]string{"live": h.m.NATSURL(), "copy": copyStream(t, msgs)} {
		out, err := auditRun(t, url, "verify", "--checkpoint-keys", keys, "--checkpoint", keptFile)
		if err != nil || !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, "valid checkpoints prove every message") {
			t.Fatalf("%s: verify of an untouched stream: %v\n%s", name, err, out)
		}
	}
	// Without keys it passes, and says what it could not prove.
	out, err := auditRun(t, copyStream(t, rechain(t, msgs)), "verify")
	if err != nil || !strings.Contains(out, "checkpoints were not checked: without --checkpoint-keys nothing proves that the ledger wrote this stream") {
		t.Fatalf("verify without keys: %v\n%s", err, out)
	}

	events := map[string][]int{} // session id → indexes of its events
	for i, m := range msgs {
		if m.subject == integrity.CheckpointSubject {
			continue
		}
		e, _ := domain.DecodeEvent(m.data)
		events[e.SessionID] = append(events[e.SessionID], i)
	}
	ai := events[alice.ID] // issued, rotated, rotated
	if len(ai) != 3 {
		t.Fatalf("alice has %d events", len(ai))
	}
	// A forged sign-out of alice's session, placed after her first rotation.
	first, _ := domain.DecodeEvent(msgs[ai[1]].data)
	forged := domain.Event{ID: "01JFORGEDFORGEDFORGEDFORGE", Time: first.Time, SessionID: alice.ID, UserKey: first.UserKey,
		Data: domain.SessionRevoked{Reason: domain.ReasonSignedOut, Actor: domain.ActorClient}}
	forgedData, err := domain.EncodeEvent(forged)
	if err != nil {
		t.Fatal(err)
	}
	insert := func(at int, m message) []message {
		c := append([]message(nil), msgs[:at]...)
		return append(append(c, m), msgs[at:]...)
	}
	without := func(i int) []message { return withoutMsg(msgs, i) }
	swapped := func(i, j int) []message { return swappedMsgs(msgs, i, j) }
	edited := func(i int, from, to string) []message { return editedMsg(t, msgs, i, from, to) }
	var noCheckpoints []message
	for _, m := range msgs {
		if m.subject != integrity.CheckpointSubject {
			noCheckpoints = append(noCheckpoints, m)
		}
	}
	lastCP := len(msgs) - 1 // the newest checkpoint, the stream's last message
	for msgs[lastCP].subject != integrity.CheckpointSubject {
		lastCP--
	}
	seq := func(i int) uint64 { return uint64(i + 1) }

	for _, tc := range []struct {
		name string
		msgs []message
		kept string // verify with this kept checkpoint file ("": none)
		kind string // the problem verify must report
		seq  uint64 // at or after which sequence (0: any)
	}{
		{"a forged event, chain recomputed", rechain(t, insert(ai[1]+1, message{eventstore.SessionSubject(forged), forgedData})), "", "tampered", seq(ai[1])},
		{"an event dropped, chain recomputed", rechain(t, without(ai[1])), "", "tampered", seq(ai[1])},
		{"two events reordered, chain recomputed", rechain(t, swapped(ai[1], ai[1]+1)), "", "tampered", seq(ai[1])},
		{"an event edited, chain recomputed", rechain(t, edited(ai[1], `"generation":1`, `"generation":7`)), "", "tampered", seq(ai[1])},
		{"rewritten from the start, checkpoints kept", rechain(t, edited(ai[0], `"laptop"`, `"evil"`)), "", "tampered", 1},
		{"rewritten from the start, checkpoints dropped", rechain(t, editedMsg(t, noCheckpoints, 0, `"laptop"`, `"evil"`)), "", "uncovered", 0},
		{"rewritten from the start, checkpoints dropped, a checkpoint kept", rechain(t, editedMsg(t, noCheckpoints, 0, `"laptop"`, `"evil"`)), keptFile, "tampered", keptCP.Covers},
		{"truncated to before the kept checkpoint", msgs[:keptCP.Covers-1], keptFile, "truncated", 0},
		{"the newest checkpoint removed: rolled back", append(append([]message(nil), msgs[:lastCP]...), msgs[lastCP+1:]...), newestFile, "rolled back", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--checkpoint-keys", keys}
			if tc.kept != "" {
				args = append(args, "--checkpoint", tc.kept)
			}
			ps, out, err := problems(t, copyStream(t, tc.msgs), args...)
			if !errors.Is(err, errIntegrity) {
				t.Fatalf("verify did not fail: %v\n%s", err, out)
			}
			for _, p := range ps {
				if p.Kind == tc.kind && p.Seq >= tc.seq {
					return
				}
			}
			t.Fatalf("verify did not report %q at or after seq %d:\n%s", tc.kind, tc.seq, out)
		})
	}

	// A forged event appended after the newest checkpoint is not covered
	// yet: verify counts it instead of vouching for it.
	tail := append(append([]message(nil), msgs...), message{eventstore.SessionSubject(forged), forgedData})
	out, err = auditRun(t, copyStream(t, rechain(t, tail)), "verify", "--checkpoint-keys", keys)
	if err != nil || !strings.Contains(out, fmt.Sprintf("1 messages after sequence %d are not yet covered", len(msgs)-1)) {
		t.Fatalf("an uncovered tail: %v\n%s", err, out)
	}
}

// TestAuditNamesWhatTheLedgerRefused: an event published into the live
// stream with the ledger's NATS credentials but without its tag key is
// refused by the ledger, listed by the next checkpoint, and named by verify
// as refused, at its sequence; the histories around it still verify.
func TestAuditNamesWhatTheLedgerRefused(t *testing.T) {
	h, keys := checkpointed(t)
	s := h.issue(`{"user_id":"alice"}`)
	waitCovered(t, h)
	st, ok := h.m.follower.Projection().Session(s.ID)
	if !ok {
		t.Fatal("no session")
	}
	expect := st.LastSeq
	forged := domain.Event{ID: "01JFORGEDFORGEDFORGEDFORGE", Time: time.Now(), SessionID: s.ID, UserKey: st.UserKey, Expect: &expect,
		Data: domain.SessionRevoked{Reason: domain.ReasonSignedOut, Actor: domain.ActorClient}}
	data, err := domain.EncodeEvent(forged)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := h.insider().PublishMsg(context.Background(), &nats.Msg{Subject: eventstore.SessionSubject(forged), Data: data})
	if err != nil {
		t.Fatal(err)
	}
	h.mustRefresh(s.Refresh) // the session is untouched
	waitCovered(t, h)
	ps, out, err := problems(t, h.m.NATSURL(), "--checkpoint-keys", keys)
	if !errors.Is(err, errIntegrity) || len(ps) != 1 || ps[0].Kind != "refused" || ps[0].Seq != ack.Sequence {
		t.Fatalf("verify: %v, want exactly one problem, refused at seq %d:\n%s", err, ack.Sequence, out)
	}
}
