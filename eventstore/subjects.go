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

// SessionFilter matches a session's own events.
func SessionFilter(sessionID string) string { return SubjectPrefix + ".*." + sessionID + ".*" }

// RevocationSubjects are the subjects of the events that may revoke access
// (domain.RevokingTypes); domain.Event.Revokes tells which of them do.
var RevocationSubjects = func() []string {
	var out []string
	for _, t := range domain.RevokingTypes {
		out = append(out, typeSubject(t))
	}
	return out
}()
