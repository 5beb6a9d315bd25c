package domain

// SessionHistory is a session's history: its own events (own, in stream
// order) followed by the user event that ended it, when a revoke-all or a
// deactivation of its user did (userEvents: the user's events in stream order;
// others are ignored). Nothing after the end belongs to the session: a later
// reactivation or revoke-all is the user's history, not the session's.
// The HTTP history endpoint and the auditors' timeline both use this rule.
func SessionHistory(own, userEvents []Event) []Event {
	var s Session
	for _, e := range own {
		_ = s.Apply(e)
	}
	if !s.Live() {
		return own
	}
	for _, e := range userEvents {
		if e.Seq > s.IssuedSeq && e.Type().EndsSessions() {
			return append(own[:len(own):len(own)], e)
		}
	}
	return own
}
