package eventstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/natstest"
)

const sid = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA"

func openStore(t *testing.T) (*eventstore.Store, *nats.Conn, *natstest.Server) {
	t.Helper()
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	st, err := eventstore.Open(context.Background(), nc, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return st, nc, srv
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ev(id, session string, p domain.Payload) domain.Event {
	return domain.Event{ID: id, Time: t0, SessionID: session, UserKey: "uk1", Data: p}
}

func TestAppendOptimisticConcurrency(t *testing.T) {
	st, _, _ := openStore(t)
	ctx := context.Background()
	seq1, err := st.Append(ctx, at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0))
	if err != nil || seq1 != 1 {
		t.Fatalf("first append: seq %d err %v", seq1, err)
	}
	// A writer of the same session that decided on stale state (expected
	// 0) loses, and learns where the session's last event is.
	var conflict *domain.ConflictError
	if _, err := st.Append(ctx, at(ev("E2", sid, domain.SessionRevoked{Reason: "x"}), 0)); !errors.As(err, &conflict) || conflict.Last != seq1 || !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale append: err %v, want a conflict at %d", err, seq1)
	}
	// Another session of the same user is independent, and so are the
	// user's user events.
	if _, err := st.Append(ctx, at(ev("E3", otherSid, domain.SessionIssued{UserID: "alice"}), 0)); err != nil {
		t.Fatalf("another session of the user: %v", err)
	}
	seqU, err := st.Append(ctx, at(ev("E4", "", domain.UserSessionsRevoked{UserID: "alice"}), 0))
	if err != nil {
		t.Fatalf("user event: %v", err)
	}
	// User events are guarded among themselves.
	if _, err := st.Append(ctx, at(ev("E5", "", domain.UserDeactivated{UserID: "alice"}), 0)); !errors.As(err, &conflict) || conflict.Last != seqU {
		t.Fatalf("stale user event: err %v, want a conflict at %d", err, seqU)
	}
	seq3, err := st.Append(ctx, at(ev("E6", sid, domain.SessionRevoked{Reason: "x"}), seq1))
	if err != nil || seq3 != 4 {
		t.Fatalf("append after catching up: seq %d err %v", seq3, err)
	}
	// An append without an expectation is refused before it is sent.
	if _, err := st.Append(ctx, ev("E7", sid, domain.SessionRevoked{Reason: "x"})); err == nil {
		t.Fatal("append without an expectation was accepted")
	}
}

func TestAppendSameEventTwiceStoresItOnce(t *testing.T) {
	// A caller retrying an attempt whose ack was lost sends the same event
	// (same Nats-Msg-Id) with the same expectation.
	st, _, _ := openStore(t)
	ctx := context.Background()
	e := ev("E1", sid, domain.SessionIssued{UserID: "alice"})
	a, err := st.Append(ctx, at(e, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Append(ctx, at(e, 0))
	if err != nil || b != a {
		t.Fatalf("retry: seq %d err %v, want seq %d", b, err, a)
	}
	if last, _ := st.LastSeq(ctx); last != 1 {
		t.Fatalf("stream holds %d events, want 1", last)
	}
}

func TestSubjectsAndStreamRules(t *testing.T) {
	st, nc, _ := openStore(t)
	ctx := context.Background()
	sub, err := nc.SubscribeSync("ledger.*.*.revoked")
	if err != nil || nc.Flush() != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, at(ev("E2", sid, domain.SessionRevoked{Reason: "x"}), 1)); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(2 * time.Second)
	if err != nil {
		t.Fatalf("subscriber on %s: %v", "ledger.*.*.revoked", err)
	}
	if want := "ledger.uk1." + sid + ".revoked"; msg.Subject != want {
		t.Fatalf("subject %q, want %q", msg.Subject, want)
	}
	if got := eventstore.SessionSubject(ev("", "", domain.UserDeactivated{})); got != "ledger.uk1.user.deactivated" {
		t.Fatalf("user event subject %q", got)
	}
	js, _ := jetstream.New(nc)
	s, _ := js.Stream(ctx, eventstore.StreamName)
	if err := s.DeleteMsg(ctx, 1); err == nil {
		t.Fatal("deleting an event succeeded on an append-only stream")
	}
	if err := s.Purge(ctx); err == nil {
		t.Fatal("purging succeeded on an append-only stream")
	}
	cfg := s.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage || !cfg.DenyDelete || !cfg.DenyPurge || cfg.AllowMsgTTL {
		t.Fatalf("stream config %+v", cfg)
	}
}

func TestOpenRefusesIncompatibleStream(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: eventstore.StreamName, Subjects: []string{"ledger.>"}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	_, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err == nil || !strings.Contains(err.Error(), "deny_delete") || !strings.Contains(err.Error(), "limits") {
		t.Fatalf("Open on an incompatible stream: %v", err)
	}
	info, _ := js.Stream(ctx, eventstore.StreamName)
	if info.CachedInfo().Config.MaxAge != time.Hour {
		t.Fatal("Open changed the existing stream")
	}
}

// TestOpenRefusesDirectGet: a stream that allows direct get lets any
// replica answer the ledger's lookups, however far behind it is.
func TestOpenRefusesDirectGet(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	ctx := context.Background()
	st, err := eventstore.Open(ctx, nc, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	stream, _ := js.Stream(ctx, eventstore.StreamName)
	cfg := stream.CachedInfo().Config
	cfg.AllowDirect = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Open(ctx, nc, eventstore.Config{}); err == nil || !strings.Contains(err.Error(), "direct get") {
		t.Fatalf("Open on a stream with direct get: %v", err)
	}
	// The store opened before keeps asking the leader: its check reads a
	// handle of its own and leaves the lookups' configuration alone.
	if err := st.Check(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LastSeq(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFollowAndHistory(t *testing.T) {
	st, _, _ := openStore(t)
	ctx := context.Background()
	other := "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"
	appends := []domain.Event{
		at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0),
		at(ev("E2", other, domain.SessionIssued{UserID: "alice"}), 0),
		at(ev("E3", sid, domain.SessionRotated{Generation: 1}), 1),
		at(ev("E4", "", domain.UserSessionsRevoked{UserID: "alice"}), 0),
		at(ev("E5", "", domain.UserReactivated{UserID: "alice"}), 4),
	}
	for _, e := range appends {
		if _, err := st.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []domain.Event
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		done <- st.Follow(fctx, 1, func(r domain.Record) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r.Event)
			return nil
		})
	}()
	poll.Until(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 4 {
			return errors.New("not all events followed yet")
		}
		return nil
	})
	cancel()
	<-done
	for i, e := range got {
		if e.Seq != uint64(i+2) || e.ID != appends[i+1].ID {
			t.Errorf("followed event %d: seq %d id %s, want seq %d id %s", i, e.Seq, e.ID, i+2, appends[i+1].ID)
		}
	}

	own, err := st.SessionEvents(ctx, "", sid)
	if err != nil {
		t.Fatal(err)
	}
	user, err := st.UserEvents(ctx, "uk1", 0)
	if err != nil {
		t.Fatal(err)
	}
	history, err := domain.SessionHistory(own, func() ([]domain.Event, error) { return user, nil })
	if err != nil {
		t.Fatal(err)
	}
	typesOf := func(es []domain.Event) string {
		var types []string
		for _, e := range es {
			types = append(types, string(e.Type()))
		}
		return strings.Join(types, " ")
	}
	for _, c := range []struct{ name, got, want string }{
		{"session events", typesOf(own), "session.issued session.rotated"},
		{"user events", typesOf(user), "user.sessions_revoked user.reactivated"},
		{"history", typesOf(history), "session.issued session.rotated user.sessions_revoked"},
	} {
		if c.got != c.want {
			t.Errorf("%s %q, want %q", c.name, c.got, c.want)
		}
	}
	if later, err := st.UserEvents(ctx, "uk1", user[len(user)-1].Seq); err != nil || len(later) != 0 {
		t.Fatalf("user events after the last: %v, %v", later, err)
	}
	for _, id := range []string{"01JD3Z9V6Q4Q4WJ5X7K8M9N0PZ", "ledger.>"} {
		if got, err := st.SessionEvents(ctx, "", id); err != nil || len(got) != 0 {
			t.Fatalf("SessionEvents(%q) = %v, %v; want none", id, got, err)
		}
	}
}

func TestFollowStopsOnUndecodableEvent(t *testing.T) {
	st, nc, _ := openStore(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.Publish(ctx, "ledger.uk1."+sid+".teleported", []byte(`{"specversion":"1.0","id":"X","type":"session.teleported","subject":"`+sid+`","time":"2026-01-01T00:00:00Z","schemaversion":1,"userkey":"uk1","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := st.Follow(ctx, 0, func(domain.Record) error { return nil })
	if !errors.Is(err, domain.ErrUnknownEventType) {
		t.Fatalf("Follow error = %v, want ErrUnknownEventType", err)
	}
}

func TestReplicatedStream(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.UserInfo(natstest.LedgerAuth.User, natstest.LedgerAuth.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	var st *eventstore.Store
	poll.Until(t, 20*time.Second, func() error { // the cluster may still be settling
		st, err = eventstore.Open(ctx, nc, eventstore.Config{Replicas: 3})
		return err
	})
	e := ev("E1", sid, domain.SessionIssued{UserID: "alice"})
	a, err := st.Append(ctx, at(e, 0))
	if err != nil {
		t.Fatal(err)
	}
	// The same event again (a retry after a lost ack): the duplicate ack
	// carries the first copy's sequence; nothing is stored twice.
	b, err := st.Append(ctx, at(e, 0))
	if err != nil || b != a {
		t.Fatalf("retry on R3: seq %d err %v, want %d", b, err, a)
	}
	if _, err := st.Append(ctx, at(ev("E2", sid, domain.SessionRevoked{}), 0)); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale append on R3: %v", err)
	}
	if last, _ := st.LastSeq(ctx); last != 1 {
		t.Fatalf("stream holds %d events", last)
	}
	// An instance configured for other replicas refuses the stream rather than change it.
	if _, err := eventstore.Open(ctx, nc, eventstore.Config{Replicas: 1}); err == nil || !strings.Contains(err.Error(), "replicas 3 (want 1)") {
		t.Fatalf("Open with other replicas: %v", err)
	}
}

// TestLeaderlessReplicaProvesNothing: while a replicated stream has no
// leader, its remaining replica answers stream info from its own state,
// which may lag behind what an instance applied. Check must not take that
// for lost history (it stopped instances for good after failovers), and
// LastSeq must not hand out the replica's sequence.
func TestLeaderlessReplicaProvesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster")
	}
	c := natstest.StartCluster(t, 3)
	ctx := context.Background()
	var st *eventstore.Store
	var nc *nats.Conn
	poll.Until(t, 20*time.Second, func() error {
		var err error
		if nc == nil {
			if nc, err = nats.Connect(c.URLs(), nats.UserInfo(natstest.LedgerAuth.User, natstest.LedgerAuth.Password)); err != nil {
				return err
			}
			t.Cleanup(nc.Close)
		}
		st, err = eventstore.Open(ctx, nc, eventstore.Config{Replicas: 3})
		return err
	})
	if _, err := st.Append(ctx, at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0)); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx, 1); err != nil {
		t.Fatalf("check with a leader: %v", err)
	}
	// The leader and one follower go: the last replica has no leader. It
	// holds sequence 1; the instance says it applied up to 1000, as one
	// that read from the lost leader could.
	// The follower that is not kept goes first, while the leader still has
	// its quorum with the kept one; then the leader, and the kept replica
	// alone cannot elect itself. (Stopping the leader first let the two
	// left elect the one about to be kept, which then answered as a leader
	// until it stepped down: a failure under load.)
	leader := c.StreamLeader(eventstore.StreamName)
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	c.Stop((leader + 2) % 3)
	c.Stop(leader)
	answered := false
	poll.Until(t, 40*time.Second, func() error {
		err := st.Check(ctx, 1000)
		switch {
		case errors.Is(err, domain.ErrHistoryLost):
			t.Fatalf("a leaderless replica's answer taken for lost history: %v", err)
		case err == nil:
			t.Fatal("check passed with 1000 applied and one message stored")
		case strings.Contains(err.Error(), "no leader"):
			answered = true // the replica did answer, and was not believed
			return nil
		}
		return err
	})
	if !answered {
		t.Fatal("the replica never answered")
	}
	if seq, err := st.LastSeq(ctx); err == nil {
		t.Fatalf("LastSeq answered %d without a stream leader", seq)
	}
}

func TestDialWithCredentials(t *testing.T) {
	for name, tc := range map[string]struct {
		opts func(*server.Options)
		good eventstore.Auth
	}{
		"user and password": {func(o *server.Options) { o.Username, o.Password = "ledger", "s3cret-pass" }, eventstore.Auth{User: "ledger", Password: "s3cret-pass"}},
		"token":             {func(o *server.Options) { o.Authorization = "s3cret-token" }, eventstore.Auth{Token: "s3cret-token"}},
	} {
		t.Run(name, func(t *testing.T) {
			o := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
			tc.opts(o)
			ns, err := server.NewServer(o)
			if err != nil {
				t.Fatal(err)
			}
			go ns.Start()
			defer ns.Shutdown()
			if !ns.ReadyForConnections(10 * time.Second) {
				t.Fatal("not ready")
			}
			url := ns.ClientURL() + "," + ns.ClientURL() // a server list
			ctx := context.Background()
			if _, err := eventstore.Connect(url, eventstore.Auth{}, "test"); err == nil || !strings.Contains(err.Error(), "connect to NATS") {
				t.Fatalf("without credentials: %v", err)
			}
			c, err := eventstore.Connect(url, tc.good, "test")
			if err != nil {
				t.Fatalf("with credentials: %v", err)
			}
			defer c.Close(ctx)
			if _, err := c.Store(ctx, eventstore.Config{}); err != nil {
				t.Fatalf("open the stream with credentials: %v", err)
			}
		})
	}
}

// at returns e expecting the last message under its expectation subjects
// at sequence last.
func at(e domain.Event, last uint64) domain.Event {
	e.Expect = &last
	return e
}
