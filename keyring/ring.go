package keyring

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
)

// Bucket is where records are kept (eventstore.KeyBucket): created once,
// never changed.
type Bucket interface {
	// Create stores value under name unless the name exists; created is
	// false when it did (another writer got there first).
	Create(ctx context.Context, name string, value []byte) (created bool, err error)
	// All returns every record.
	All(ctx context.Context) (map[string][]byte, error)
	// Watch calls fn for every record there is and every one created after,
	// until ctx ends; done is closed once it has stopped.
	Watch(ctx context.Context, fn func(name string, value []byte)) (done <-chan struct{}, err error)
}

// Ring holds every generation of every kind of key: generation 0 from
// keys.json, the others from the bucket.
type Ring struct {
	cipher *Cipher
	bucket Bucket
	log    *slog.Logger

	mu      sync.Mutex
	records map[string][]Record // by kind, sorted by generation
	changed chan struct{}       // closed and replaced at each change
}

// New returns a ring holding base (generation 0 of each kind) and whatever
// Load and Watch then read from bucket.
func New(c *Cipher, bucket Bucket, base []Record, log *slog.Logger) (*Ring, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Ring{cipher: c, bucket: bucket, log: log, records: map[string][]Record{}, changed: make(chan struct{})}
	for _, b := range base {
		if b.Gen != 0 {
			return nil, fmt.Errorf("keyring: base record %s is not generation 0", b.Name())
		}
		r.records[b.Kind] = []Record{b}
	}
	for _, k := range Kinds {
		if len(r.records[k]) == 0 && k != SET {
			return nil, fmt.Errorf("keyring: no generation 0 of %s keys", k)
		}
	}
	return r, nil
}

// Load reads every record in the bucket now.
func (r *Ring) Load(ctx context.Context) error {
	all, err := r.bucket.All(ctx)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	for name, value := range all {
		r.add(name, value)
	}
	return nil
}

// Watch follows the bucket until ctx ends, adding records as they come;
// done is closed once it has stopped.
func (r *Ring) Watch(ctx context.Context) (done <-chan struct{}, err error) {
	return r.bucket.Watch(ctx, func(name string, value []byte) { r.add(name, value) })
}

// add opens and keeps one record; a record that does not open is logged
// (never its content) and left out.
func (r *Ring) add(name string, value []byte) {
	rec, err := r.cipher.Open(name, value)
	if err != nil {
		r.log.Error("keyring: record left out", "record", name, "err", err)
		return
	}
	if err := rec.check(); err != nil {
		r.log.Error("keyring: record left out", "record", name, "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := r.records[rec.Kind]
	i, found := slices.BinarySearchFunc(recs, rec.Gen, func(a Record, g uint32) int { return int(int64(a.Gen) - int64(g)) })
	if found {
		return
	}
	r.records[rec.Kind] = slices.Insert(slices.Clone(recs), i, rec)
	close(r.changed)
	r.changed = make(chan struct{})
}

// check refuses a record whose secret is not the right material for its kind.
func (rec Record) check() error {
	switch rec.Kind {
	case Signing, SET:
		k, err := accesstoken.ParsePrivateKey(rec.Secret)
		if err != nil {
			return err
		}
		if k.ID != rec.ID || k.Alg() != rec.Alg {
			return errors.New("keyring: signing record's id or alg is not its key's")
		}
		if rec.Kind == SET && rec.Alg != SETAlg {
			return errors.New("keyring: a SET record that is not " + SETAlg)
		}
	case Token:
		if _, _, err := decodeTokenKeys(rec.Secret); err != nil {
			return err
		}
	case Tag:
		if len(rec.Secret) < 32 {
			return errors.New("keyring: tag record is shorter than 32 bytes")
		}
	case Checkpoint:
		if len(rec.Secret) != ed25519.SeedSize {
			return errors.New("keyring: checkpoint record is not an Ed25519 seed")
		}
	}
	return nil
}

// Records returns the generations of kind, oldest first, and a channel
// closed at the next change of any kind.
func (r *Ring) Records(kind string) ([]Record, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records[kind], r.changed
}

// Rotate creates the next generation of kind, taking over at activateAt
// (never before the latest generation's). For signing keys, alg chooses
// the algorithm and retireAfter is recorded (Record.RetireAfter). If
// another writer created that generation first, that record is returned
// with created false.
func (r *Ring) Rotate(ctx context.Context, kind, alg string, now, activateAt time.Time, retireAfter time.Duration) (rec Record, created bool, err error) {
	recs, _ := r.Records(kind)
	var latest Record // SET keys start at generation 1
	switch {
	case len(recs) > 0:
		latest = recs[len(recs)-1]
	case kind != SET:
		return Record{}, false, fmt.Errorf("keyring: unknown kind of key %q", kind)
	}
	rec = Record{Kind: kind, Gen: latest.Gen + 1}
	if kind == Signing {
		rec.RetireAfter = retireAfter
	}
	generating := time.Now()
	if kind == SET {
		alg = SETAlg
	}
	switch kind {
	case Signing, SET:
		k, err := accesstoken.NewRandomKey(alg)
		if err != nil {
			return Record{}, false, err
		}
		if rec.Secret, err = k.MarshalPrivate(); err != nil {
			return Record{}, false, err
		}
		rec.ID, rec.Alg = k.ID, k.Alg()
	case Token:
		rec.ID = newID("d")
		if rec.Secret, err = encodeTokenKeys(random(32), random(32)); err != nil {
			return Record{}, false, err
		}
	case Tag:
		rec.ID, rec.Secret = newID("t"), random(32)
	case Checkpoint:
		rec.ID, rec.Secret = newID("c"), random(ed25519.SeedSize)
	}
	// The schedule counts from when the record is written, not from before
	// the key was made (an RSA key takes a while): a key is published for
	// the whole pre-publication time before it signs.
	took := time.Since(generating)
	rec.Created, rec.ActivateAt = now.Add(took), activateAt.Add(took)
	if rec.ActivateAt.Before(latest.ActivateAt) {
		rec.ActivateAt = latest.ActivateAt
	}
	b, err := r.cipher.Seal(rec)
	if err != nil {
		return Record{}, false, err
	}
	created, err = r.bucket.Create(ctx, rec.Name(), b)
	if err != nil {
		return Record{}, false, fmt.Errorf("keyring: create %s: %w", rec.Name(), err)
	}
	if err := r.Load(ctx); err != nil {
		return Record{}, false, err
	}
	recs, _ = r.Records(kind)
	for _, got := range recs {
		if got.Gen == rec.Gen {
			return got, created, nil
		}
	}
	return Record{}, false, fmt.Errorf("keyring: %s was created but cannot be read back", rec.Name())
}

// newID returns a fresh key id: prefix and 8 random base64url characters.
func newID(prefix string) string {
	return prefix + base64.RawURLEncoding.EncodeToString(random(6))
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
