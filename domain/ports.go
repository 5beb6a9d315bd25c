package domain

import "context"

// EventStore is the ledger's source of truth: an append-only log with
// optimistic concurrency per user.
type EventStore interface {
	// Append stores e if the last stored event of e's user (session and user
	// events alike) has stream sequence expectedUserSeq (0: none). It returns
	// the new event's sequence, or an error matching ErrConflict when another
	// write came first.
	Append(ctx context.Context, e Event, expectedUserSeq uint64) (uint64, error)
	// LastUserSeq returns the sequence of the last message stored under the
	// user's subjects (what Append expects), 0 if there is none. It may be a
	// message the ledger refused (see Record); the chain digest to continue
	// from is the projection's.
	LastUserSeq(ctx context.Context, userKey string) (uint64, error)
	// LastSeq returns the sequence of the last message in the stream, as
	// the stream leader reports it: every write acknowledged before LastSeq
	// was called is at or below it.
	LastSeq(ctx context.Context) (uint64, error)
	// LastSessionSeq returns the sequence of the last message stored under
	// the session's subjects (refused ones included: a point to wait for),
	// 0 if none.
	LastSessionSeq(ctx context.Context, sessionID string) (uint64, error)
	// SessionEvents returns the session's own events in stream order (none
	// for an unknown session).
	SessionEvents(ctx context.Context, sessionID string) ([]Event, error)
	// UserEvents returns the user's user events (not its sessions' events)
	// after stream sequence afterSeq, in stream order.
	UserEvents(ctx context.Context, userKey string, afterSeq uint64) ([]Event, error)
}

// RecordKind says what a stored message is.
type RecordKind uint8

// Record kinds.
const (
	RecordEvent      RecordKind = iota + 1 // an event the ledger wrote
	RecordCheckpoint                       // a checkpoint the ledger wrote
	RecordRejected                         // anything else: never applied
)

// Record is one stored message of the stream as an instance reads it back,
// after checking that the ledger wrote it.
type Record struct {
	Kind    RecordKind
	Seq     uint64
	Digest  [32]byte // SHA-256 of the stored bytes
	UserKey string   // the user key its subject names, "" if none
	Event   Event    // RecordEvent
	Covers  uint64   // RecordCheckpoint: the sequence it commits to
	Err     error    // RecordRejected: why
}

// EventRecord is the record of an event the ledger wrote.
func EventRecord(e Event) Record {
	return Record{Kind: RecordEvent, Seq: e.Seq, Digest: e.Digest, UserKey: e.UserKey, Event: e}
}
