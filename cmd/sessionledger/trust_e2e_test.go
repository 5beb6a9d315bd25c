package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/eventstore/embedded"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/projections"
)

// The tests in this file attack a running ledger the ways its trust model
// (eventstore/embedded/accounts.conf, package integrity) says they fail:
// from outside, with no credentials; from inside, with the ledger's NATS
// credentials but not its tag key; with a forged snapshot; and by taking
// history away. After each attack the victims' sessions are as they were and
// every user can still be written.

// promptly is how soon a refusal must reach the client that tried.
const promptly = 2 * time.Second

// forgedEvent is a well-formed event of the user with userKey, with a fresh
// id and the expectation the ledger would write it under (the last message
// under the session's subjects, or the user's last user event): what anyone
// who reads the stream can write.
func forgedEvent(t *testing.T, h *ledgerHarness, userKey, sessionID string, data domain.Payload) (domain.Event, []byte) {
	t.Helper()
	e := domain.Event{ID: ulid.Make().String(), Time: time.Now(), SessionID: sessionID, UserKey: userKey, Data: data}
	var expect uint64
	under := eventstore.ExpectFilter(e)
	for _, m := range h.streamMessages() {
		if strings.HasPrefix(m.Subject, strings.TrimSuffix(under, "*")) {
			expect = m.Sequence
		}
	}
	e.Expect = &expect
	b, err := domain.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, b
}

// expecting adds to h the headers that make the stream enforce e's
// expectation, as the ledger's appends do.
func expecting(h nats.Header, e domain.Event) nats.Header {
	h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*e.Expect, 10))
	h.Set(jetstream.ExpectedLastSubjSeqSubjHeader, eventstore.ExpectFilter(e))
	return h
}

// otherTagKeys are tag keys that are not the ledger's: a fresh random key
// under id.
func otherTagKeys(t *testing.T, id string) *integrity.TagKeys {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	tk, err := integrity.NewTagKeys(id, map[string][]byte{id: key})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// stillWritable requires that the ledger still records every kind of write
// for user, whose live session s an attack aimed at: s refreshes, a
// revoke-all and a deactivation are recorded and take effect. Each is an
// append that expects the sequence of the last message stored under the
// user's subjects, so a stray message there that the ledger had not counted
// would make them fail.
func stillWritable(t *testing.T, h *ledgerHarness, user string, s session) {
	t.Helper()
	next := h.mustRefresh(s.Refresh)
	h.mustAdmin("DELETE", "/v1/users/"+user+"/sessions", "", http.StatusNoContent)
	h.wantInvalidGrant(next.Refresh)
	again := h.issue(fmt.Sprintf(`{"user_id":%q}`, user))
	h.mustAdmin("POST", "/v1/users/"+user+"/deactivate", "", http.StatusNoContent)
	h.wantInvalidGrant(again.Refresh)
	if st, _ := h.admin("POST", "/v1/sessions", fmt.Sprintf(`{"user_id":%q}`, user)); st != http.StatusConflict {
		t.Fatalf("issue to %s after its deactivation: %d, want 409", user, st)
	}
}

// outsider is a client of the ledger's NATS with no credentials (the READ
// account's "reader"), and the errors the server sends it asynchronously.
type outsider struct {
	nc   *nats.Conn
	errs chan error
}

func connectOutsider(t *testing.T, h *ledgerHarness) *outsider {
	t.Helper()
	o := &outsider{errs: make(chan error, 64)}
	nc, err := nats.Connect(h.m.NATSURL(), nats.Name("outsider"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case o.errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	o.nc = nc
	return o
}

// refusal runs attempt and returns how long it took to be refused and the
// error that refused it: the one attempt returned or, for a publish the
// client cannot match to the server's answer (a core publish; a JetStream
// publish, whose request nats.go would wait out to its timeout), the
// permissions violation the server reports asynchronously. The error is nil
// if neither came within promptly.
func (o *outsider) refusal(attempt func(context.Context) error) (time.Duration, error) {
	for len(o.errs) > 0 {
		<-o.errs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*promptly)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- attempt(ctx) }()
	deadline := time.After(promptly)
	for {
		select {
		case err := <-done:
			if err != nil {
				return time.Since(start), err
			}
			done = nil // no error (a core publish): the server's comes asynchronously
		case err := <-o.errs:
			took := time.Since(start)
			cancel()
			if done != nil {
				<-done
			}
			return took, err
		case <-deadline:
			cancel()
			if done != nil {
				<-done
			}
			return time.Since(start), nil
		}
	}
}

// jsAPIRequest sends a JetStream API request as raw NATS and returns the
// error it gets: no responders, or the API's own error.
func jsAPIRequest(ctx context.Context, nc *nats.Conn, subject, body string) error {
	resp, err := nc.RequestWithContext(ctx, subject, []byte(body))
	if err != nil {
		return err
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("answer %q: %w", resp.Data, err)
	}
	if r.Error != nil {
		return r.Error
	}
	return nil
}

// bucketState is the snapshot bucket's stream state, read with the ledger's
// credentials.
func bucketState(t *testing.T, h *ledgerHarness) jetstream.StreamState {
	t.Helper()
	s, err := h.insider().Stream(context.Background(), "OBJ_"+eventstore.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// TestOutsiderCannotWriteTheLedger connects to the ledger's NATS without
// credentials, as any process that reaches its port can, and tries every way
// to change the ledger's history or its snapshots: publishing a well-formed
// revocation of the victim's live session (JetStream and core) and a
// reactivation of a deactivated user, publishing to reply subjects (to answer
// someone else's request), and every stream and bucket operation that could
// rewrite, cut or replace the history, through the default JetStream API
// (the READ account has no JetStream) and through the reader's API prefix
// (only reads are imported). Each is refused within 2 s with the server's
// reason, nothing is stored, the snapshot bucket is untouched, the victim's
// session still refreshes, the deactivated user stays deactivated, and every
// user can still be written. The same client can read: stream info, an
// ephemeral consumer and single messages through the prefix, and a core
// subscription that sees a revocation the ledger records.
func TestOutsiderCannotWriteTheLedger(t *testing.T) {
	h := boot(t, "", nil)
	victim := h.issue(`{"user_id":"victim"}`)
	h.issue(`{"user_id":"dora"}`)
	h.mustAdmin("POST", "/v1/users/dora/deactivate", "", http.StatusNoContent)
	vk, dk := h.m.ledger.UserKey("victim"), h.m.ledger.UserKey("dora")
	revoke, revokeData := forgedEvent(t, h, vk, victim.ID, domain.SessionRevoked{Reason: domain.ReasonAdminRevoked, Actor: domain.ActorAdmin})
	reactivate, reactivateData := forgedEvent(t, h, dk, "", domain.UserReactivated{UserID: "dora", Actor: domain.ActorAdmin})
	revokeSubject, reactivateSubject := eventstore.SessionSubject(revoke), eventstore.SessionSubject(reactivate)

	o := connectOutsider(t, h)
	jsDefault, err := jetstream.New(o.nc)
	if err != nil {
		t.Fatal(err)
	}
	jsReader, err := jetstream.NewWithAPIPrefix(o.nc, eventstore.ReaderAPIPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ledgerStream, err := jsReader.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatalf("a reader cannot read the stream's info: %v", err)
	}
	keepOne := ledgerStream.CachedInfo().Config // the stream's own configuration, as anyone may read it
	keepOne.MaxMsgs = 1
	before, bucketBefore := h.lastSeq(), bucketState(t, h)

	denied := func(subject string) string {
		return fmt.Sprintf("permissions violation for publish to %q", subject)
	}
	type attempt struct {
		name string
		want string // in the error that refuses it (compared in lower case)
		do   func(ctx context.Context) error
	}
	attempts := []attempt{
		{"JetStream publish of a session.revoked for the victim's live session", denied(revokeSubject), func(ctx context.Context) error {
			_, err := jsDefault.PublishMsg(ctx, &nats.Msg{Subject: revokeSubject, Data: revokeData})
			return err
		}},
		{"core publish of the same revocation", denied(revokeSubject), func(context.Context) error {
			return o.nc.Publish(revokeSubject, revokeData)
		}},
		{"JetStream publish of a user.reactivated for a deactivated user", denied(reactivateSubject), func(ctx context.Context) error {
			_, err := jsDefault.PublishMsg(ctx, &nats.Msg{Subject: reactivateSubject, Data: reactivateData})
			return err
		}},
		{"publish to a reply inbox (answering another client's request)", denied("_INBOX.anyone.1"), func(context.Context) error {
			return o.nc.Publish("_INBOX.anyone.1", []byte(`{"stream":"LEDGER","seq":1}`))
		}},
		{"publish to an old-style reply subject", denied("_R_.anyone.1"), func(context.Context) error {
			return o.nc.Publish("_R_.anyone.1", []byte(`{"stream":"LEDGER","seq":1}`))
		}},
		{"JetStream publish into the snapshot bucket", "no response from stream", func(ctx context.Context) error {
			_, err := jsDefault.Publish(ctx, "$O."+eventstore.SnapshotBucket+".M.cHJvamVjdGlvbg==", []byte(`{"name":"projection"}`))
			return err
		}},
	}
	for _, api := range []struct {
		name, prefix, want string
		js                 jetstream.JetStream
	}{
		{"default API", "$JS.API", "jetstream not enabled for account", jsDefault},
		{"reader API", eventstore.ReaderAPIPrefix, "no responders", jsReader},
	} {
		js := api.js
		attempts = append(attempts,
			attempt{api.name + ": update LEDGER to keep one message", api.want, func(ctx context.Context) error {
				_, err := js.UpdateStream(ctx, keepOne)
				return err
			}},
			attempt{api.name + ": create or update LEDGER", api.want, func(ctx context.Context) error {
				_, err := js.CreateOrUpdateStream(ctx, keepOne)
				return err
			}},
			attempt{api.name + ": create a stream of its own on ledger.>", api.want, func(ctx context.Context) error {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHADOW", Subjects: []string{"ledger.>"}})
				return err
			}},
			attempt{api.name + ": delete LEDGER", api.want, func(ctx context.Context) error {
				return js.DeleteStream(ctx, eventstore.StreamName)
			}},
			attempt{api.name + ": purge LEDGER", api.want, func(ctx context.Context) error {
				return jsAPIRequest(ctx, o.nc, api.prefix+".STREAM.PURGE."+eventstore.StreamName, `{}`)
			}},
			attempt{api.name + ": delete message 1 of LEDGER", api.want, func(ctx context.Context) error {
				return jsAPIRequest(ctx, o.nc, api.prefix+".STREAM.MSG.DELETE."+eventstore.StreamName, `{"seq":1,"no_erase":true}`)
			}},
			attempt{api.name + ": write a snapshot into the bucket", api.want, func(ctx context.Context) error {
				os, err := js.ObjectStore(ctx, eventstore.SnapshotBucket)
				if err != nil {
					return err
				}
				_, err = os.PutBytes(ctx, "projection", []byte("SLSNAP"))
				return err
			}},
			attempt{api.name + ": create the snapshot bucket", api.want, func(ctx context.Context) error {
				_, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: eventstore.SnapshotBucket})
				return err
			}},
		)
	}
	for _, a := range attempts {
		took, err := o.refusal(a.do)
		t.Logf("%s: refused after %v: %v", a.name, took.Round(time.Millisecond), err)
		switch {
		case err == nil:
			t.Errorf("%s: not refused within %v", a.name, promptly)
		case !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(a.want)):
			t.Errorf("%s: refused after %v with %q, want an error saying %q", a.name, took.Round(time.Millisecond), err, a.want)
		case took >= promptly:
			t.Errorf("%s: refused only after %v", a.name, took)
		}
	}
	if after := h.lastSeq(); after != before {
		t.Fatalf("the outsider's attempts stored %d messages", after-before)
	}
	if after := bucketState(t, h); after.Msgs != bucketBefore.Msgs || after.LastSeq != bucketBefore.LastSeq {
		t.Fatalf("the snapshot bucket changed: %+v, was %+v", after, bucketBefore)
	}
	if seq := h.m.snapshotSeq(t); seq != 0 {
		t.Fatalf("a snapshot covering %d appeared", seq)
	}

	// What a reader may do, it can.
	info, err := ledgerStream.Info(ctx)
	if err != nil || info.State.LastSeq != before || info.State.Msgs != before {
		t.Fatalf("stream info through the reader prefix: %v %+v, want %d messages", err, info, before)
	}
	first, err := ledgerStream.GetMsg(ctx, 1)
	if err != nil || !strings.HasSuffix(first.Subject, ".issued") {
		t.Fatalf("message 1 through the reader prefix: %v %v", err, first)
	}
	cons, err := ledgerStream.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second})
	if err != nil {
		t.Fatalf("ephemeral consumer through the reader prefix: %v", err)
	}
	batch, err := cons.Fetch(int(before), jetstream.FetchMaxWait(promptly))
	if err != nil {
		t.Fatal(err)
	}
	var read []string
	for m := range batch.Messages() {
		read = append(read, m.Subject())
	}
	if batch.Error() != nil || len(read) != int(before) || !slices.Contains(read, "ledger."+vk+"."+victim.ID+".issued") {
		t.Fatalf("the consumer read %v (%v), want the %d messages with the victim's issue", read, batch.Error(), before)
	}
	if err := ledgerStream.DeleteConsumer(ctx, cons.CachedInfo().Name); err != nil {
		t.Fatalf("a reader cannot delete its consumer: %v", err)
	}
	sub := subscribe(t, o.nc, "ledger.*.*.revoked")
	bystander := h.issue(`{"user_id":"bystander"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+bystander.ID, "", http.StatusNoContent)
	msg, err := sub.NextMsg(promptly)
	if want := "ledger." + h.m.ledger.UserKey("bystander") + "." + bystander.ID + ".revoked"; err != nil || msg.Subject != want || msg.Header.Get(integrity.TagHeader) == "" {
		t.Fatalf("the outsider's subscription got %v %v, want the tagged revocation on %s", msg, err, want)
	}

	// The victims are as they were, and everyone can still be written.
	if sessions := h.userSessions("victim"); len(sessions) != 1 || sessions[0]["session_id"] != victim.ID || !h.active(victim.Refresh) {
		t.Fatalf("the victim's sessions: %v", sessions)
	}
	if st, _ := h.admin("POST", "/v1/sessions", `{"user_id":"dora"}`); st != http.StatusConflict {
		t.Fatalf("issue to the deactivated user: %d, want 409", st)
	}
	stillWritable(t, h, "victim", victim)
	h.mustAdmin("POST", "/v1/users/dora/reactivate", "", http.StatusNoContent)
	stillWritable(t, h, "dora", h.issue(`{"user_id":"dora"}`))
}

// refusedLines returns the projection's refusal log lines by sequence.
func refusedLines(t *testing.T, h *ledgerHarness) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	for _, line := range strings.Split(h.logs.String(), "\n") {
		var l struct {
			Msg string `json:"msg"`
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "projection: refused a message that is not the ledger's history" {
			out[l.Seq] = line
		}
	}
	return out
}

// TestInsiderCannotRewriteHistory publishes into the live stream with the
// ledger's own NATS credentials (a stolen credential, an operator gone wrong)
// but without its tag key: a revocation of the victim's live session
// untagged, tagged under another key with the ledger's key id, and tagged
// under an unknown key; the reuse-revoked session's own issued and rotated
// events again: verbatim, with all their original headers, and with their
// message ids and tags (JetStream stores nothing: the expected last sequence
// fails, the message id is a duplicate), then with only their valid tags
// (stored; the per-user chain refuses them); a reactivation of a deactivated user; the victim's genuine event
// stored under another user's subject; five junk bytes under the victim's
// subjects and, like `nats pub ledger.x.y.revoked hello`, under nobody's.
// One more is tagged with the ledger's own key (what a stolen tag key
// allows): a rotation of the revoked session, an impossible transition.
// Every stored one is refused: counted by Refused and the metric, logged with
// its reason and no token, listed by a signed checkpoint. The projection
// never stops (/readyz 200); the victim's session is untouched, the stolen
// tokens stay invalid_grant, the deactivated user stays deactivated, and
// every user named by a forged subject can still be written.
func TestInsiderCannotRewriteHistory(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.CheckpointInterval = 50 * time.Millisecond })
	proj := h.m.follower.Projection()
	victim := h.issue(`{"user_id":"victim"}`)
	bystander := h.issue(`{"user_id":"bystander"}`)
	robbed := []session{h.issue(`{"user_id":"robbed"}`)}
	robbed = append(robbed, h.mustRefresh(robbed[0].Refresh))
	robbed = append(robbed, h.mustRefresh(robbed[1].Refresh))
	h.wantInvalidGrant(robbed[0].Refresh) // two rotations old: reuse, the session is revoked
	h.issue(`{"user_id":"dora"}`)
	h.mustAdmin("POST", "/v1/users/dora/deactivate", "", http.StatusNoContent)
	vk, bk, rk, dk := h.m.ledger.UserKey("victim"), h.m.ledger.UserKey("bystander"), h.m.ledger.UserKey("robbed"), h.m.ledger.UserKey("dora")

	genuine := map[string]*jetstream.RawStreamMsg{}
	var replayed []*jetstream.RawStreamMsg // the robbed session's issue and rotations
	for _, m := range h.streamMessages() {
		genuine[m.Subject] = m
		if strings.HasPrefix(m.Subject, "ledger."+rk+"."+robbed[0].ID+".") && (strings.HasSuffix(m.Subject, ".issued") || strings.HasSuffix(m.Subject, ".rotated")) {
			replayed = append(replayed, m)
		}
	}
	victimIssued := genuine["ledger."+vk+"."+victim.ID+".issued"]
	if len(replayed) != 3 || victimIssued == nil {
		t.Fatalf("the stream lacks the events to replay: %d of the robbed session, victim's issue %v", len(replayed), victimIssued)
	}

	js := h.insider()
	ctx := context.Background()
	// Verbatim, their expectation of the session's last sequence fails;
	// with their message ids alone, JetStream takes them for retries of the
	// originals. Either way it stores nothing.
	for _, m := range replayed {
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
		if apiErr := (*jetstream.APIError)(nil); !errors.As(err, &apiErr) || apiErr.ErrorCode != 10071 {
			t.Fatalf("%s republished verbatim: %v, want wrong last sequence (10071)", m.Subject, err)
		}
		withID := nats.Header{}
		for _, k := range []string{integrity.TagHeader, jetstream.MsgIDHeader} {
			withID[k] = m.Header.Values(k)
		}
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: withID})
		if err != nil || !ack.Duplicate || ack.Sequence != m.Sequence {
			t.Fatalf("%s republished with its message id: %+v %v, want a duplicate of %d", m.Subject, ack, err, m.Sequence)
		}
	}

	ledgerKeys := h.tagKeys()
	tag := func(keys *integrity.TagKeys, data []byte) nats.Header {
		return nats.Header{integrity.TagHeader: {keys.Tag(sha256.Sum256(data))}}
	}
	revoke, revokeData := forgedEvent(t, h, vk, victim.ID, domain.SessionRevoked{Reason: domain.ReasonAdminRevoked, Actor: domain.ActorAdmin})
	reactivate, reactivateData := forgedEvent(t, h, dk, "", domain.UserReactivated{UserID: "dora", Actor: domain.ActorAdmin})
	revive, reviveData := forgedEvent(t, h, rk, robbed[0].ID, domain.SessionRotated{Generation: 3, RefreshToken: domain.Digest{KeyID: "k", Value: sha256.Sum256([]byte("x"))}})
	forged := []struct {
		name   string
		msg    *nats.Msg
		reason string // in the refusal's log line
	}{
		// First: its expectation must hold when it is published.
		{"with the ledger's own tag key and the expectation it would write: a rotation of the revoked session",
			&nats.Msg{Subject: eventstore.SessionSubject(revive), Data: reviveData, Header: expecting(tag(ledgerKeys, reviveData), revive)}, "impossible transition"},
		{"the same without its expectation",
			&nats.Msg{Subject: eventstore.SessionSubject(revive), Data: reviveData, Header: tag(ledgerKeys, reviveData)}, "stored without the expectation it was written for"},
		{"an untagged session.revoked for the victim's live session",
			&nats.Msg{Subject: eventstore.SessionSubject(revoke), Data: revokeData}, integrity.ErrNoTag.Error()},
		{"the same, tagged under another key with the ledger's key id",
			&nats.Msg{Subject: eventstore.SessionSubject(revoke), Data: revokeData, Header: tag(otherTagKeys(t, ledgerKeys.Current()), revokeData)}, integrity.ErrBadTag.Error()},
		{"the same, tagged under a key the ledger does not have",
			&nats.Msg{Subject: eventstore.SessionSubject(revoke), Data: revokeData, Header: tag(otherTagKeys(t, "forger"), revokeData)}, integrity.ErrUnknownKey.Error()},
		{"the reuse-revoked session's issue again, with its valid tag",
			&nats.Msg{Subject: replayed[0].Subject, Data: replayed[0].Data, Header: nats.Header{integrity.TagHeader: replayed[0].Header.Values(integrity.TagHeader)}}, "stored without the expectation it was written for"},
		{"its first rotation again, with its valid tag",
			&nats.Msg{Subject: replayed[1].Subject, Data: replayed[1].Data, Header: nats.Header{integrity.TagHeader: replayed[1].Header.Values(integrity.TagHeader)}}, "stored without the expectation it was written for"},
		{"its second rotation again, with its valid tag",
			&nats.Msg{Subject: replayed[2].Subject, Data: replayed[2].Data, Header: nats.Header{integrity.TagHeader: replayed[2].Header.Values(integrity.TagHeader)}}, "stored without the expectation it was written for"},
		{"an untagged user.reactivated for the deactivated user",
			&nats.Msg{Subject: eventstore.SessionSubject(reactivate), Data: reactivateData}, integrity.ErrNoTag.Error()},
		{"the victim's genuine issue, with its valid tag, under the bystander's subject",
			&nats.Msg{Subject: "ledger." + bk + "." + victim.ID + ".issued", Data: victimIssued.Data, Header: nats.Header{integrity.TagHeader: victimIssued.Header.Values(integrity.TagHeader)}},
			fmt.Sprintf("belongs under %q", victimIssued.Subject)},
		{"five junk bytes under the victim's subjects",
			&nats.Msg{Subject: "ledger." + vk + ".x.revoked", Data: []byte("hello")}, integrity.ErrNoTag.Error()},
	}
	refusedBefore := proj.Refused()
	want := map[uint64]string{} // sequence → reason
	for _, f := range forged {
		ack, err := js.PublishMsg(ctx, f.msg)
		if err != nil || ack.Duplicate {
			t.Fatalf("%s: not stored (%v, %+v): the test must reach the projection", f.name, err, ack)
		}
		want[ack.Sequence] = f.reason
	}
	// And as `nats pub ledger.x.y.revoked hello` does it: a core publish.
	nc := h.insiderConn()
	if err := nc.Publish("ledger.x.y.revoked", []byte("hello")); err != nil || nc.Flush() != nil {
		t.Fatalf("core publish: %v", err)
	}
	poll.Until(t, 5*time.Second, func() error {
		for _, m := range h.streamMessages() {
			if m.Subject == "ledger.x.y.revoked" {
				want[m.Sequence] = integrity.ErrNoTag.Error()
				return nil
			}
		}
		return errors.New("the core publish is not in the stream")
	})
	var last uint64
	for seq := range want {
		last = max(last, seq)
	}
	poll.For(t, 5*time.Second, func() bool { return proj.Applied() >= last }, func() string {
		return fmt.Sprintf("the projection applied up to %d, the forged messages reach %d", proj.Applied(), last)
	})

	if got := proj.Refused() - refusedBefore; got != uint64(len(want)) {
		t.Errorf("the projection refused %d messages, want the %d forged ones", got, len(want))
	}
	if got := scrape(t, h, "sessionledger_refused_messages_total"); got != float64(proj.Refused()) {
		t.Errorf("sessionledger_refused_messages_total = %v, want %d", got, proj.Refused())
	}
	lines := refusedLines(t, h)
	tokens := []string{victim.Refresh, victim.Access, bystander.Refresh, bystander.Access}
	for _, s := range robbed {
		tokens = append(tokens, s.Refresh, s.Access)
	}
	for seq, reason := range want {
		line, ok := lines[seq]
		if !ok {
			t.Errorf("no refusal logged for sequence %d (%s)", seq, reason)
			continue
		}
		if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, jsonEscaped(reason)) {
			t.Errorf("refusal of %d logged as %s, want a warning with the reason %q", seq, line, reason)
		}
		for _, tok := range tokens {
			if strings.Contains(line, strings.TrimPrefix(tok, "slrt_")) {
				t.Errorf("the refusal of %d logs a token: %s", seq, line)
			}
		}
	}
	// A signed checkpoint names each refused message.
	poll.Until(t, 10*time.Second, func() error {
		listed := map[uint64]bool{}
		for _, m := range h.streamMessages() {
			if m.Subject != integrity.CheckpointSubject {
				continue
			}
			c, err := integrity.DecodeCheckpoint(m.Data)
			if err != nil {
				return err
			}
			for _, seq := range c.Rejected {
				listed[seq] = true
			}
		}
		for seq := range want {
			if !listed[seq] {
				return fmt.Errorf("no checkpoint lists the refused message %d", seq)
			}
		}
		return nil
	})

	h.wantGet("/readyz", http.StatusOK, `{"status":"ready"}`)
	if sessions := h.userSessions("victim"); len(sessions) != 1 || sessions[0]["session_id"] != victim.ID || !h.active(victim.Refresh) {
		t.Fatalf("the victim's sessions after the attacks: %v", sessions)
	}
	for i, s := range robbed {
		h.wantInvalidGrant(s.Refresh)
		if h.active(s.Refresh) || h.active(s.Access) {
			t.Fatalf("the robbed session's tokens of generation %d are active again", i)
		}
	}
	if sessions := h.userSessions("robbed"); len(sessions) != 0 {
		t.Fatalf("the reuse-revoked session is listed again: %v", sessions)
	}
	if st, _ := h.admin("POST", "/v1/sessions", `{"user_id":"dora"}`); st != http.StatusConflict {
		t.Fatalf("issue to the deactivated user after a forged reactivation: %d, want 409", st)
	}
	// Everyone named by a forged message can still be written, and others are served.
	stillWritable(t, h, "victim", victim)
	stillWritable(t, h, "bystander", bystander)
	stillWritable(t, h, "robbed", h.issue(`{"user_id":"robbed"}`))
	h.mustAdmin("POST", "/v1/users/dora/reactivate", "", http.StatusNoContent)
	stillWritable(t, h, "dora", h.issue(`{"user_id":"dora"}`))
	h.mustRefresh(h.issue(`{"user_id":"newcomer"}`).Refresh)
	h.wantGet("/readyz", http.StatusOK, `{"status":"ready"}`)
}

// jsonEscaped is s as it appears inside a JSON string.
func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// TestForgedSnapshotIsIgnored writes, with the ledger's NATS credentials,
// snapshots that would change what the ledger answers if it trusted them: one
// built from the real stream as if the revocation of a session had never
// happened, sealed under another key with the ledger's key id; one sealed
// under an unknown key id that claims to cover more than the stream holds
// (trusted, it would make the ledger refuse to start). Sealed with the
// ledger's own key, each would do what it aims at (checked in process). On
// restart the ledger ignores each, says so, replays the stream: the revoked
// session stays revoked, the live one still refreshes, and both users can
// still be written.
func TestForgedSnapshotIsIgnored(t *testing.T) {
	dir := t.TempDir()
	noSnapshots := func(c *Config) { c.SnapshotInterval = 0 }
	h := boot(t, dir, noSnapshots)
	live := h.issue(`{"user_id":"alice"}`)
	revoked := h.issue(`{"user_id":"victim"}`)
	revoked1 := h.mustRefresh(revoked.Refresh)
	h.mustAdmin("DELETE", "/v1/sessions/"+revoked.ID, "", http.StatusNoContent)
	h.wantInvalidGrant(revoked1.Refresh)
	last := h.lastSeq()

	// build replays the real stream into a projection, leaving the
	// revocation out, and makes it cover up to covers.
	build := func(covers uint64) *projections.Sessions {
		p := projections.NewSessions(nil)
		for _, m := range h.streamMessages() {
			e, err := domain.DecodeEvent(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			e.Seq = m.Sequence
			if e.Type() == domain.TypeSessionRevoked {
				continue
			}
			if err := p.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.ApplyRecord(domain.Record{Kind: domain.RecordRejected, Seq: covers, Err: errors.New("forged")}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ledgerKeys := h.tagKeys()
	for _, c := range []struct {
		name    string
		covers  uint64
		sealer  *integrity.TagKeys
		sealErr error // why the ledger's keys do not open its seal
		// potent says what the snapshot would do, sealed with the ledger's key.
		potent func(p *projections.Sessions) error
	}{
		{"reviving a revoked session, sealed under another key with the ledger's key id", last, otherTagKeys(t, ledgerKeys.Current()), integrity.ErrBadTag,
			func(p *projections.Sessions) error {
				if s, ok := p.Session(revoked.ID); !ok || !s.Live() {
					return errors.New("the revoked session is not live in it")
				}
				return nil
			}},
		{"covering more than the stream, sealed under an unknown key", last + 100, otherTagKeys(t, "forger"), integrity.ErrUnknownKey,
			func(p *projections.Sessions) error {
				if p.Applied() <= last {
					return fmt.Errorf("it covers %d, the stream %d", p.Applied(), last)
				}
				return nil
			}},
	} {
		p := build(c.covers)
		genuine, _ := p.Snapshot(ledgerKeys)
		if restored, err := projections.RestoreSessions(genuine, ledgerKeys, nil); err != nil || c.potent(restored) != nil {
			t.Fatalf("%s: sealed with the ledger's key, the snapshot would not do harm (%v, %v): the test proves nothing", c.name, err, c.potent(restored))
		}
		forged, _ := p.Snapshot(c.sealer)
		if _, err := projections.RestoreSessions(forged, ledgerKeys, nil); !errors.Is(err, projections.ErrSnapshotMismatch) {
			t.Fatalf("%s: restored with %v", c.name, err)
		}
		obj, err := h.insider().ObjectStore(context.Background(), eventstore.SnapshotBucket)
		if err != nil {
			t.Fatal(err)
		}
		meta := jetstream.ObjectMeta{Name: "projection", Metadata: map[string]string{"seq": strconv.FormatUint(c.covers, 10)}}
		if _, err := obj.Put(context.Background(), meta, bytes.NewReader(forged)); err != nil {
			t.Fatal(err)
		}
		if seq := h.m.snapshotSeq(t); seq != c.covers {
			t.Fatalf("%s: the bucket's snapshot covers %d, want %d", c.name, seq, c.covers)
		}
		h.close()

		h = boot(t, dir, noSnapshots) // fails the test if the ledger refuses to start
		logs := h.logs.String()
		ignored := regexp.MustCompile(`"msg":"snapshot ignored; replaying the stream from the start".*"err":"[^"]*seal: ` + regexp.QuoteMeta(c.sealErr.Error()))
		if !ignored.MatchString(logs) || strings.Contains(logs, "projection restored from snapshot") {
			t.Fatalf("%s: the forged snapshot was not ignored for its seal (%v):\n%s", c.name, c.sealErr, logs)
		}
		h.wantInvalidGrant(revoked1.Refresh)
		h.wantInvalidGrant(revoked.Refresh)
		if h.active(revoked1.Refresh) || len(h.userSessions("victim")) != 0 {
			t.Fatalf("%s: the revoked session came back", c.name)
		}
		live = h.mustRefresh(live.Refresh)
		last = h.lastSeq()
	}
	stillWritable(t, h, "alice", live)
	stillWritable(t, h, "victim", h.issue(`{"user_id":"victim"}`))
}

// runOn starts a ledger on dir as boot does and returns Run's error (the
// Main closed), or nil with the Main running.
func runOn(t *testing.T, dir string) (*Main, *syncBuffer, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir, cfg.AdminToken, cfg.Issuer = "127.0.0.1:0", "", dir, testAdminToken, "http://ledger.test"
	cfg.CheckpointInterval = 0
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	m := NewMain(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		return nil, logs, err
	}
	return m, logs, nil
}

// wantStopped waits until the ledger says it has stopped because its stream
// lost history (reason in /readyz), and requires the API to answer 503.
func wantStopped(t *testing.T, h *ledgerHarness, reason string) {
	t.Helper()
	start := time.Now()
	poll.Until(t, 5*time.Second, func() error {
		st, body := h.do("GET", "/readyz", "", "", nil)
		if r, _ := body["reason"].(string); st != http.StatusServiceUnavailable || !strings.Contains(r, domain.ErrHistoryLost.Error()) || !strings.Contains(r, reason) {
			return fmt.Errorf("/readyz answers %d %v, want 503 saying %q and %q", st, body, domain.ErrHistoryLost, reason)
		}
		return nil
	})
	t.Logf("stopped %v after the history was lost", time.Since(start).Round(time.Millisecond))
	if st, body := h.refresh("slrt_x"); st != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" ||
		!strings.Contains(fmt.Sprint(body["error_description"]), "its stream lost history") {
		t.Fatalf("token endpoint of a stopped ledger: %d %v, want 503 saying the stream lost history", st, body)
	}
	if resp := h.raw("GET", "/v1/users/alice/sessions", "", "", adminHeader); resp.status != http.StatusServiceUnavailable {
		t.Fatalf("admin API of a stopped ledger: %d %s", resp.status, resp.body)
	}
	h.wantGet("/healthz", http.StatusOK, `{"status":"ok"}`)
}

// TestDeletedStreamStopsTheLedger: even with the ledger's NATS credentials,
// the stream refuses a purge and a message delete, and an update that would
// lift those refusals. Deleting the whole stream under a running ledger
// stops it within a few seconds (/readyz and the API 503), and a restart on
// the same data dir refuses to start, naming stream.json, instead of starting
// an empty ledger that has forgotten every deactivation and revocation (and
// would create the stream anew: a second attempt refuses too). A stream
// created in its place is refused as another stream.
func TestDeletedStreamStopsTheLedger(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, nil)
	s := h.issue(`{"user_id":"alice"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	h.mustAdmin("POST", "/v1/users/dora/deactivate", "", http.StatusNoContent)
	before := h.lastSeq()

	js := h.insider()
	ctx := context.Background()
	stream, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx); err == nil || !strings.Contains(err.Error(), "purge not permitted") {
		t.Fatalf("insider purge: %v, want it refused", err)
	}
	if err := stream.DeleteMsg(ctx, 1); err == nil || !strings.Contains(err.Error(), "message delete not permitted") {
		t.Fatalf("insider message delete: %v, want it refused", err)
	}
	lifted := stream.CachedInfo().Config
	lifted.DenyDelete, lifted.DenyPurge = false, false
	if _, err := js.UpdateStream(ctx, lifted); err == nil || !strings.Contains(err.Error(), "can not cancel deny message deletes") {
		t.Fatalf("insider update lifting deny_delete: %v, want it refused", err)
	}
	if h.lastSeq() != before {
		t.Fatal("the stream changed")
	}

	if err := js.DeleteStream(ctx, eventstore.StreamName); err != nil {
		t.Fatalf("insider stream delete: %v", err)
	}
	wantStopped(t, h, "the stream LEDGER was deleted")
	h.close()

	for range 2 { // the first refusal created nothing: the second refuses too
		m, _, err := runOn(t, dir)
		if m != nil {
			m.Close()
			t.Fatal("a ledger whose stream was deleted started again, empty")
		}
		if !errors.Is(err, domain.ErrHistoryLost) || !strings.Contains(err.Error(), streamRecordPath(dir)) {
			t.Fatalf("restart after the stream was deleted: %v, want %v naming %s", err, domain.ErrHistoryLost, streamRecordPath(dir))
		}
	}

	// Someone with the ledger's credentials creates an empty LEDGER in its
	// place, configured as the ledger would: a restart refuses it as another
	// stream than the one stream.json records.
	e, err := embedded.Start(embedded.Config{StoreDir: filepath.Join(dir, "jetstream")})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Store(context.Background(), eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	e.Shutdown()
	m, _, err := runOn(t, dir)
	if m != nil {
		m.Close()
		t.Fatal("a ledger started on a stream created in place of its own")
	}
	if !errors.Is(err, domain.ErrHistoryLost) || !strings.Contains(err.Error(), "this is another stream") {
		t.Fatalf("restart on a replaced stream: %v, want %v saying it is another stream", err, domain.ErrHistoryLost)
	}
}

// TestTruncatedStreamStopsTheLedger: with the ledger's NATS credentials, the
// stream's own configuration with a limit of one message (deny_delete and
// deny_purge kept, so JetStream accepts it) drops every older message; the
// running ledger notices and stops. A restart refuses the stream while it is
// so configured, and, once the limit is lifted again, a restarted ledger
// stops too rather than serve the truncated history.
func TestTruncatedStreamStopsTheLedger(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, nil)
	s := h.issue(`{"user_id":"alice"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	h.mustAdmin("POST", "/v1/users/dora/deactivate", "", http.StatusNoContent)
	h.issue(`{"user_id":"bob"}`)
	last := h.lastSeq()

	js := h.insider()
	ctx := context.Background()
	stream, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	keepOne := stream.CachedInfo().Config
	keepOne.MaxMsgs = 1
	updated, err := js.UpdateStream(ctx, keepOne)
	if err != nil {
		t.Fatalf("JetStream refused the update (%v): then assert that instead", err)
	}
	info := updated.CachedInfo()
	if info.State.Msgs != 1 || info.State.FirstSeq != last {
		t.Fatalf("after the update the stream holds %d messages from %d, want 1 from %d", info.State.Msgs, info.State.FirstSeq, last)
	}
	wantStopped(t, h, "messages were removed from the stream")

	// Restarting on the stream so configured: refused.
	h.close()
	m, _, err := runOn(t, dir)
	if m != nil {
		m.Close()
		t.Fatal("a ledger started on a stream limited to one message")
	}
	if err == nil || !strings.Contains(err.Error(), "would delete events") {
		t.Fatalf("restart on the limited stream: %v", err)
	}

	// The insider lifts the limit again (the ledger is down; its NATS is
	// started here with its credentials).
	e, err := embedded.Start(embedded.Config{StoreDir: filepath.Join(dir, "jetstream")})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	ejs, err := jetstream.New(conn.NATS())
	if err != nil {
		t.Fatal(err)
	}
	keepOne.MaxMsgs = -1
	if _, err := ejs.UpdateStream(ctx, keepOne); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	e.Shutdown()

	// Restarting once the limit is lifted: the stream is configured as the
	// ledger needs and is the one stream.json records, but it lost its
	// first messages. The ledger refuses it at start, before it decides
	// anything on what is left (a deactivation among the lost messages would
	// let that user in again).
	m, _, err = runOn(t, dir)
	if m != nil || !errors.Is(err, domain.ErrHistoryLost) || !strings.Contains(err.Error(), "messages were removed from the stream") {
		t.Fatalf("restart on the truncated stream: %v, want %v saying messages were removed", err, domain.ErrHistoryLost)
	}
}
