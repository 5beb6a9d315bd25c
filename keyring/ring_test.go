package keyring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/keyring"
)

func baseRecords() []keyring.Record {
	tok, _ := json.Marshal(map[string][]byte{"digest_key": bytes.Repeat([]byte{1}, 32), "successor_key": bytes.Repeat([]byte{2}, 32)})
	return []keyring.Record{
		{Kind: keyring.Signing, ID: "s0", Alg: "EdDSA"},
		{Kind: keyring.Token, ID: "d0", Secret: tok},
		{Kind: keyring.Tag, ID: "t0", Secret: bytes.Repeat([]byte{3}, 32)},
		{Kind: keyring.Checkpoint, ID: "c0", Secret: bytes.Repeat([]byte{4}, 32)},
	}
}

// openRing opens a ring on the key bucket of the stream the ledger
// identity reaches through url, as one instance of the ledger does.
func openRing(t *testing.T, ctx context.Context, url string, keyringKey byte) *keyring.Ring {
	t.Helper()
	c, err := keyring.NewCipher(bytes.Repeat([]byte{keyringKey}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return openRingWith(t, ctx, url, c, baseRecords())
}

func openRingWith(t *testing.T, ctx context.Context, url string, c *keyring.Cipher, base []keyring.Record) *keyring.Ring {
	t.Helper()
	r, err := keyring.New(c, openBucket(t, ctx, url), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// openBucket opens the key bucket as the ledger's identity does, until the
// test ends.
func openBucket(t *testing.T, ctx context.Context, url string) *eventstore.KeyBucket {
	t.Helper()
	conn, err := eventstore.Connect(url, natstest.LedgerAuth, "ring-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	store, err := conn.Store(ctx, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := store.KeyBucket(ctx, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return bucket
}

// TestInstancesAgreeOnEachGeneration: two instances rotating the same kind
// at the same moment make one record between them, and each learns the
// other's records from the bucket without asking.
func TestInstancesAgreeOnEachGeneration(t *testing.T) {
	srv := natstest.StartAccounts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := openRing(t, ctx, srv.ClientURL(), 9)
	b := openRing(t, ctx, srv.ClientURL(), 9)

	now := time.Now()
	var wg sync.WaitGroup
	results := make([]bool, 2)
	recs := make([]keyring.Record, 2)
	for i, r := range []*keyring.Ring{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, created, err := r.Rotate(ctx, keyring.Tag, "", now, now.Add(time.Second), 0)
			if err != nil {
				t.Error(err)
			}
			recs[i], results[i] = rec, created
		}()
	}
	wg.Wait()
	if results[0] == results[1] {
		t.Fatalf("created: %v; want exactly one instance to make generation 1", results)
	}
	if recs[0].ID != recs[1].ID || !bytes.Equal(recs[0].Secret, recs[1].Secret) {
		t.Fatal("the two instances hold different keys for generation 1")
	}

	// A rotation on one instance reaches the other through the watch.
	rec, created, err := a.Rotate(ctx, keyring.Token, "", now, now.Add(time.Second), 0)
	if err != nil || !created {
		t.Fatalf("rotate: %v %v", created, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, changed := b.Records(keyring.Token)
		if len(got) == 2 && got[1].ID == rec.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other instance never learned of the new token key")
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestReadersCannotReadTheKeyBucket: whoever connects without the ledger's
// credentials (the default reader) cannot read the bucket at all, and what
// the ledger's own identity reads there is sealed: a ring with another
// keyring key leaves every record out.
func TestReadersCannotReadTheKeyBucket(t *testing.T) {
	srv := natstest.StartAccounts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := openRing(t, ctx, srv.ClientURL(), 9)
	now := time.Now()
	rec, _, err := a.Rotate(ctx, keyring.Tag, "", now, now, 0)
	if err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(srv.ClientURL()) // no credentials: the reader
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithTimeout(ctx, 3*time.Second)
	defer kcancel()
	if kv, err := js.KeyValue(kctx, eventstore.KeyBucketName); err == nil {
		if e, err := kv.Get(kctx, rec.Name()); err == nil {
			t.Fatalf("a reader read the record %s (%d bytes)", e.Key(), len(e.Value()))
		}
	}
	msg, err := nc.Request("$JS.API.STREAM.MSG.GET.KV_"+eventstore.KeyBucketName, []byte(`{"last_by_subj":"$KV.`+eventstore.KeyBucketName+`.`+rec.Name()+`"}`), time.Second)
	if err == nil && !bytes.Contains(msg.Data, []byte(`"error"`)) {
		t.Fatalf("a reader's raw stream request was answered: %d bytes", len(msg.Data))
	}

	other := openRing(t, ctx, srv.ClientURL(), 7)
	if got, _ := other.Records(keyring.Tag); len(got) != 1 {
		t.Fatalf("a ring with another keyring key opened %d records; want only generation 0", len(got)-1)
	}
}
