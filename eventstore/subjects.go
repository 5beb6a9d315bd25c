package eventstore

import (
	"strings"
	"time"

	"github.com/sessionledger/sessionledger/domain"
)

// Stream layout.
const (
	StreamName    = "LEDGER"
	SubjectPrefix = "ledger"
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id, which
	// bounds how long a publish whose ack was lost can be retried safely.
	DuplicateWindow = 2 * time.Minute
	// ReaderAPIPrefix is the JetStream API prefix under which readers of the
	// ledger's NATS accounts reach the stream, read-only
	// (eventstore/embedded/accounts.conf).
	ReaderAPIPrefix = "JS.LEDGER.API"
)

// SessionSubject is the subject of an event:
// ledger.<user-key>.<session-id>.<name> for a session event, name being the
// type without "session.", and ledger.<user-key>.user.<name> for a user event.
func SessionSubject(e domain.Event) string {
	if e.Type().IsUserEvent() {
		return SubjectPrefix + "." + e.UserKey + ".user." + strings.TrimPrefix(string(e.Type()), "user.")
	}
	return SubjectPrefix + "." + e.UserKey + "." + e.SessionID + "." + strings.TrimPrefix(string(e.Type()), "session.")
}

// typeSubject is the filter for every event of type t, of any user and session.
func typeSubject(t domain.EventType) string {
	if t.IsUserEvent() {
		return SubjectPrefix + ".*.user." + strings.TrimPrefix(string(t), "user.")
	}
	return SubjectPrefix + ".*.*." + strings.TrimPrefix(string(t), "session.")
}

// UserFilter matches every event of one user, session and user events alike.
func UserFilter(userKey string) string { return SubjectPrefix + "." + userKey + ".>" }

// UserEventsFilter matches one user's user events (not its sessions' events).
func UserEventsFilter(userKey string) string { return SubjectPrefix + "." + userKey + ".user.*" }

// SessionFilter matches a session's own events, under any user: a filter
// with a wildcard before the session id, which the server matches against
// every user's subjects (its cost grows with the number of users). Use
// UserSessionFilter when the user is known.
func SessionFilter(sessionID string) string { return SubjectPrefix + ".*." + sessionID + ".*" }

// UserSessionFilter matches a session's own events under its user's key: a
// literal prefix, which the server matches without visiting other users.
func UserSessionFilter(userKey, sessionID string) string {
	return SubjectPrefix + "." + userKey + "." + sessionID + ".*"
}

// ExpectFilter is the filter whose last message an append of e expects
// (domain.Event.Expect): the session's own subjects for a session event,
// the user's user-event subjects for a user event.
func ExpectFilter(e domain.Event) string {
	if e.Type().IsUserEvent() {
		return UserEventsFilter(e.UserKey)
	}
	return UserSessionFilter(e.UserKey, e.SessionID)
}

// RevocationSubjects are the subjects of the events that may revoke access
// (domain.RevokingTypes); domain.Event.Revokes tells which of them do.
var RevocationSubjects = func() []string {
	var out []string
	for _, t := range domain.RevokingTypes {
		out = append(out, typeSubject(t))
	}
	return out
}()

// TypeSubjects are the filters for every event of the types ts, of any user
// and session.
func TypeSubjects(ts []domain.EventType) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, typeSubject(t))
	}
	return out
}
