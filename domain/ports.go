package domain

import "context"

// EventStore is the ledger's source of truth: an append-only log with
// optimistic concurrency per session (and per user for user events).
type EventStore interface {
	// Append stores e if the last message under e's expectation subjects
	// (the session's own subjects for a session event, the user's user-event
	// subjects for a user event) has stream sequence *e.Expect (0: none),
	// and records that expectation with it. It returns the new event's
	// sequence, or a *ConflictError when another write came first.
	Append(ctx context.Context, e Event) (uint64, error)
	// LastSeq returns the sequence of the last message in the stream, as
	// the stream leader reports it: every write acknowledged before LastSeq
	// was called is at or below it.
	LastSeq(ctx context.Context) (uint64, error)
	// SessionEvents returns the session's own events in stream order (none
	// for an unknown session). userKey, when the caller knows it, narrows
	// the read to the user's subjects; "" reads every user's.
	SessionEvents(ctx context.Context, userKey, sessionID string) ([]Event, error)
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
	// Under is what the subject names after the user key: a session id,
	// or "user" for the user's user events ("" for any other subject).
	// The stream counts the message there for the next append's
	// expectation, whatever it is.
	Under  string
	Event  Event  // RecordEvent
	Covers uint64 // RecordCheckpoint: the sequence it commits to
	Err    error  // RecordRejected: why
}

// EventRecord is the record of an event the ledger wrote.
func EventRecord(e Event) Record {
	under := e.SessionID
	if e.Type().IsUserEvent() {
		under = "user"
	}
	return Record{Kind: RecordEvent, Seq: e.Seq, Digest: e.Digest, UserKey: e.UserKey, Under: under, Event: e}
}
