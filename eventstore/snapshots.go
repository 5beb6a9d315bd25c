package eventstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Snapshot storage: one object in a JetStream object store, tagged with the
// stream sequence it covers. The object store checks its own digest on read.
const (
	SnapshotBucket = "LEDGER_SNAPSHOTS"
	snapshotObject = "projection"
	metaSeq        = "seq"
)

// Snapshots keeps projection snapshots next to the stream.
type Snapshots struct {
	os jetstream.ObjectStore
}

// Snapshots opens (creating if needed) the snapshot bucket with the stream's replicas.
func (s *Store) Snapshots(ctx context.Context, cfg Config) (*Snapshots, error) {
	os, err := s.js.ObjectStore(ctx, SnapshotBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		os, err = s.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      SnapshotBucket,
			Description: "sessionledger projection snapshots",
			Storage:     jetstream.FileStorage,
			Replicas:    max(cfg.Replicas, 1),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: snapshot bucket: %w", err)
	}
	return &Snapshots{os: os}, nil
}

// Save stores data as the snapshot covering the stream up to seq; the
// sequence goes in the object's metadata too, so that instances can compare
// without downloading.
func (s *Snapshots) Save(ctx context.Context, seq uint64, data []byte) error {
	meta := jetstream.ObjectMeta{Name: snapshotObject, Metadata: map[string]string{metaSeq: strconv.FormatUint(seq, 10)}}
	if _, err := s.os.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("eventstore: save snapshot: %w", err)
	}
	return nil
}

// LatestSeq returns the sequence the stored snapshot covers, 0 if none.
func (s *Snapshots) LatestSeq(ctx context.Context) (uint64, error) {
	info, err := s.os.GetInfo(ctx, snapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore: snapshot info: %w", err)
	}
	seq, _ := strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
	return seq, nil
}

// Latest returns the stored snapshot, nil if there is none.
func (s *Snapshots) Latest(ctx context.Context) ([]byte, error) {
	data, err := s.os.GetBytes(ctx, snapshotObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: load snapshot: %w", err)
	}
	return data, nil
}
