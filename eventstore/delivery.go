package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
)

// Delivery to receivers over HTTP (package transmit) reads the stream
// through durable consumers, one per endpoint, and keeps the endpoints in a
// key-value bucket. Both live in the ledger's account: readers of the
// stream have no access to the bucket, and a durable consumer's name is
// random and kept in the bucket, so a reader, who may create and delete
// consumers of the stream by name (to read it), cannot find one to delete
// or drain.

// DeliveryBucketName is the bucket of the delivery endpoints, their
// receivers, recorded failures and poll positions.
const DeliveryBucketName = "LEDGER_DELIVERY"

// Errors of the delivery bucket.
var (
	ErrNotFound = errors.New("eventstore: not found")
	ErrExists   = errors.New("eventstore: already exists")
	// ErrChanged: an update expected a revision that is no longer the
	// latest (another writer came first): read again and retry.
	ErrChanged = errors.New("eventstore: changed by another writer")
)

// DeliveryBucket is the key-value bucket of the delivery state.
type DeliveryBucket struct {
	kv jetstream.KeyValue
}

// DeliveryBucket opens (creating if needed) the delivery bucket with the
// stream's replicas.
func (s *Store) DeliveryBucket(ctx context.Context) (*DeliveryBucket, error) {
	kv, err := s.js.KeyValue(ctx, DeliveryBucketName)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      DeliveryBucketName,
			Description: "sessionledger delivery endpoints (secrets sealed)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(s.cfg.Replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(ctx, DeliveryBucketName)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: delivery bucket: %w", err)
	}
	return &DeliveryBucket{kv: kv}, nil
}

// Get returns the value under key and its revision (ErrNotFound if none).
func (b *DeliveryBucket) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("eventstore: get %s: %w", key, err)
	}
	return e.Value(), e.Revision(), nil
}

// Create stores value under key unless the key exists (ErrExists).
func (b *DeliveryBucket) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := b.kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore: create %s: %w", key, err)
	}
	return rev, nil
}

// Update replaces the value under key if its revision is still rev
// (ErrChanged otherwise).
func (b *DeliveryBucket) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	n, err := b.kv.Update(ctx, key, value, rev)
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
		return 0, ErrChanged
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore: update %s: %w", key, err)
	}
	return n, nil
}

// Put stores value under key whatever was there.
func (b *DeliveryBucket) Put(ctx context.Context, key string, value []byte) error {
	if _, err := b.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("eventstore: put %s: %w", key, err)
	}
	return nil
}

// Delete removes key and its history; a missing key is no error.
func (b *DeliveryBucket) Delete(ctx context.Context, key string) error {
	if err := b.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("eventstore: delete %s: %w", key, err)
	}
	return nil
}

// List returns the values of the keys matching filter (NATS subject
// wildcards: "webhook.*"), by key.
func (b *DeliveryBucket) List(ctx context.Context, filter string) (map[string][]byte, error) {
	w, err := b.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("eventstore: list %s: %w", filter, err)
	}
	defer w.Stop()
	out, err := currentKV(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("eventstore: list %s: %w", filter, err)
	}
	return out, nil
}

// Watch calls fn with every key matching filter and its value, then with
// every change after (a nil value: deleted), until ctx ends; it watches
// again after a lost watch, starting over with the current values. done is
// closed once it has stopped.
func (b *DeliveryBucket) Watch(ctx context.Context, filter string, fn func(key string, value []byte)) (done <-chan struct{}, err error) {
	done, err = followKV(ctx, func(ctx context.Context) (jetstream.KeyWatcher, error) {
		return b.kv.Watch(ctx, filter)
	}, func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			fn(e.Key(), nil)
			return
		}
		fn(e.Key(), e.Value())
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: watch %s: %w", filter, err)
	}
	return done, nil
}

// DeliveryAckWait is how long a delivery may take before the message goes
// to another instance: the handler of a message is bounded to three
// quarters of it, the acknowledgement after it to 5 s. It is also how long the message an
// instance held when it died waits before another has it.
const DeliveryAckWait = 20 * time.Second

// deliveryConsumer is the configuration of an endpoint's durable consumer:
// from startSeq, explicit acks, one message outstanding at a time across
// every instance, so that an endpoint gets the stream's order and a
// message waiting for a retry holds back the ones after it.
func (s *Store) deliveryConsumer(name string, filters []string, startSeq uint64) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "sessionledger delivery",
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(startSeq, 1),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        DeliveryAckWait,
		MaxDeliver:     -1,
		MaxAckPending:  1,
		Replicas:       max(s.cfg.Replicas, 1),
	}
}

// EnsureDeliveryConsumer creates the durable consumer name reading filters
// from startSeq, or checks that the existing one reads them (ErrExists if
// someone made one of that name with another configuration).
func (s *Store) EnsureDeliveryConsumer(ctx context.Context, name string, filters []string, startSeq uint64) error {
	cfg := s.deliveryConsumer(name, filters, startSeq)
	_, err := withRetry(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return s.stream.CreateConsumer(ctx, cfg)
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return fmt.Errorf("eventstore: delivery consumer %s: %w with another configuration", name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("eventstore: delivery consumer %s: %w", name, err)
	}
	return nil
}

// DeleteDeliveryConsumer deletes the durable consumer name; a missing one
// is no error.
func (s *Store) DeleteDeliveryConsumer(ctx context.Context, name string) error {
	err := s.stream.DeleteConsumer(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("eventstore: delete delivery consumer %s: %w", name, err)
	}
	return nil
}

// DeliveryState is where an endpoint's consumer stands.
type DeliveryState struct {
	Pending    uint64 // matching messages not yet delivered
	AckPending uint64 // delivered and not yet acknowledged (0 or 1)
	AckFloor   uint64 // the stream sequence up to which everything is acknowledged
	LastSeq    uint64 // the stream sequence of the last message delivered
}

// DeliveryInfo returns the state of the durable consumer name (ErrNotFound
// if there is none).
func (s *Store) DeliveryInfo(ctx context.Context, name string) (DeliveryState, error) {
	info, err := withRetry(ctx, func(ctx context.Context) (*jetstream.ConsumerInfo, error) {
		c, err := s.stream.Consumer(ctx, name)
		if err != nil {
			return nil, err
		}
		return c.Info(ctx)
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return DeliveryState{}, ErrNotFound
	}
	if err != nil {
		return DeliveryState{}, fmt.Errorf("eventstore: delivery consumer %s: %w", name, err)
	}
	return DeliveryState{Pending: info.NumPending, AckPending: uint64(info.NumAckPending), AckFloor: info.AckFloor.Stream, LastSeq: info.Delivered.Stream}, nil
}

// Delivery is one message handed to an endpoint's deliverer.
type Delivery struct {
	// Record is the message read as the projection reads it: an event the
	// ledger wrote (RecordEvent), or anything else (RecordRejected), which
	// is never delivered.
	Record  domain.Record
	Stored  time.Time // when the stream stored it
	Attempt uint64    // 1 for the first delivery, more for each redelivery
	Pending uint64    // matching messages after it, not yet delivered
}

// Verdict is what a deliverer decided about a Delivery: done (delivered, or
// given up and recorded), or to be delivered again after Retry.
type Verdict struct {
	Done  bool
	Retry time.Duration
}

// ErrDeliveryConsumerGone: the endpoint's durable consumer no longer exists.
var ErrDeliveryConsumerGone = errors.New("eventstore: the delivery consumer no longer exists")

// Deliver hands the messages of the durable consumer name to fn, one at a
// time, until ctx ends (nil) or the consumer is gone
// (ErrDeliveryConsumerGone). A message fn is done with is acknowledged
// before the next is asked for; one it wants again comes back after the
// delay, to whichever instance asks first. A lost connection or an election
// is waited out.
func (s *Store) Deliver(ctx context.Context, name string, fn func(context.Context, Delivery) Verdict) error {
	rd := s.reader()
	for backoff := minResumePause; ctx.Err() == nil; backoff = min(2*backoff, maxResumePause) {
		progressed, err := s.deliverSome(ctx, name, rd, fn)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrDeliveryConsumerGone):
			return err
		case progressed:
			backoff = minResumePause
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	return nil
}

func (s *Store) deliverSome(ctx context.Context, name string, rd *reader, fn func(context.Context, Delivery) Verdict) (progressed bool, err error) {
	cons, err := withRetry(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return s.stream.Consumer(ctx, name)
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, ErrDeliveryConsumerGone
	}
	if err != nil {
		return false, err
	}
	// One message per pull, asked for when the one before is done, and each
	// pull waited out to its end even when ctx ends: a message the server
	// hands over is always handled, never left to its ack wait in a buffer
	// nobody reads.
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return progressed, deliveryErr(err)
		}
		for msg := range batch.Messages() {
			done, err := s.deliverOne(ctx, msg, rd, fn)
			if err != nil {
				return progressed, err
			}
			progressed = progressed || done
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return progressed, deliveryErr(err)
		}
	}
	return progressed, nil
}

// deliveryErr maps a pull's error: the consumer gone, or anything else to
// wait out.
func deliveryErr(err error) error {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return ErrDeliveryConsumerGone
	}
	return err
}

// deliverOne hands msg to fn and acknowledges it or asks for it again, as
// fn decides; done reports an acknowledgement. A message handed over is
// always finished, even when ctx ends meanwhile (fn's attempt is bounded by
// its own timeout): one handed back instead would, across a restart of the
// server, wait out its ack wait before anyone had it again.
func (s *Store) deliverOne(ctx context.Context, msg jetstream.Msg, rd *reader, fn func(context.Context, Delivery) Verdict) (done bool, err error) {
	// Bounded as a whole well inside the ack wait, so that the message is
	// never handed to another instance while this one still sends it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DeliveryAckWait*3/4)
	defer cancel()
	md, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return false, nil
	}
	r, err := rd.record(msg, md)
	if err != nil {
		// Written by a newer version of the ledger: one of its instances
		// delivers it.
		_ = msg.NakWithDelay(5 * time.Second)
		return false, nil
	}
	v := fn(ctx, Delivery{Record: r, Stored: md.Timestamp, Attempt: md.NumDelivered, Pending: md.NumPending})
	if !v.Done {
		_ = msg.NakWithDelay(v.Retry)
		return false, nil
	}
	// Acknowledged before the next message is asked for, and confirmed, so
	// that a message is not delivered again once its successor was.
	actx, cancelAck := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelAck()
	if err := msg.DoubleAck(actx); err != nil {
		return false, fmt.Errorf("eventstore: ack: %w", err)
	}
	return true, nil
}

// ReadRecords returns the records of the messages matching filters after
// afterSeq, at most limit of them, in stream order. When there are none
// yet, it waits up to wait for the first and returns once it came (with
// whatever followed it at once).
func (s *Store) ReadRecords(ctx context.Context, filters []string, afterSeq uint64, limit int, wait time.Duration) ([]domain.Record, error) {
	if limit <= 0 {
		return nil, nil
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timer *time.Timer
	var out []domain.Record
	rd := s.reader()
	err := consumeMsgs(rctx, s.stream, filters, position{afterSeq: afterSeq}, func(pending uint64) bool {
		if pending == 0 {
			if wait <= 0 {
				return true
			}
			timer = time.AfterFunc(wait, cancel)
		}
		return false
	}, func(msg jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		r, err := rd.record(msg, md)
		if err != nil {
			return false, err
		}
		out = append(out, r)
		return len(out) < limit && md.NumPending > 0, nil
	})
	if timer != nil {
		timer.Stop()
	}
	if err != nil && !(errors.Is(err, context.Canceled) && ctx.Err() == nil) {
		return out, fmt.Errorf("eventstore: read: %w", err)
	}
	return out, nil
}
