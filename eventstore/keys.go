package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KeyBucketName is the bucket of the ledger's rotated keys (keyring records,
// each encrypted by the keyring before it gets here): a key-value bucket in
// the ledger's account, which readers are given no access to, where a record
// is created once and never changed.
const KeyBucketName = "LEDGER_KEYS"

// KeyBucket implements keyring.Bucket over a JetStream key-value bucket.
type KeyBucket struct {
	kv jetstream.KeyValue
}

// KeyBucket opens (creating if needed) the key bucket with the stream's replicas.
func (s *Store) KeyBucket(ctx context.Context, cfg Config) (*KeyBucket, error) {
	kv, err := s.js.KeyValue(ctx, KeyBucketName)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      KeyBucketName,
			Description: "sessionledger rotated keys (encrypted records)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(cfg.Replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(ctx, KeyBucketName) // another instance made it first
		}
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: key bucket: %w", err)
	}
	return &KeyBucket{kv: kv}, nil
}

// Create stores value under name unless name exists.
func (b *KeyBucket) Create(ctx context.Context, name string, value []byte) (bool, error) {
	_, err := b.kv.Create(ctx, name, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	return err == nil, err
}

// All returns every record.
func (b *KeyBucket) All(ctx context.Context) (map[string][]byte, error) {
	w, err := b.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	out, err := currentKV(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("eventstore: key bucket: %w", err)
	}
	return out, nil
}

// currentKV reads the current values a new watch w delivers first, by key.
func currentKV(ctx context.Context, w jetstream.KeyWatcher) (map[string][]byte, error) {
	out := map[string][]byte{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watch ended")
			}
			if e == nil {
				return out, nil // the current values are all in
			}
			out[e.Key()] = e.Value()
		}
	}
}

// Watch calls fn for every record and every one created after, until ctx
// ends; it watches again if the watch ends early (a lost connection). done
// is closed once the watch has stopped.
func (b *KeyBucket) Watch(ctx context.Context, fn func(name string, value []byte)) (done <-chan struct{}, err error) {
	return followKV(ctx, func(ctx context.Context) (jetstream.KeyWatcher, error) {
		return b.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	}, func(e jetstream.KeyValueEntry) { fn(e.Key(), e.Value()) })
}

// followKV runs a key-value watch opened by open, calling fn with each
// entry, until ctx ends; a watch that ends early (a lost connection) is
// opened again, once a second until it opens. done is closed once it has
// stopped.
func followKV(ctx context.Context, open func(context.Context) (jetstream.KeyWatcher, error), fn func(jetstream.KeyValueEntry)) (done <-chan struct{}, err error) {
	w, err := open(ctx)
	if err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer func() { w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					w.Stop()
					for ctx.Err() == nil {
						if w, err = open(ctx); err == nil {
							break
						}
						select {
						case <-ctx.Done():
							return
						case <-time.After(time.Second):
						}
					}
					continue
				}
				if e != nil {
					fn(e)
				}
			}
		}
	}()
	return stopped, nil
}
