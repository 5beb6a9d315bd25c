package domain

// SessionHistory is a session's history: its own events (own, in stream
// order) followed by the user event that ended it, when a revoke-all or a
// deactivation of its user did. userEvents returns the user's events after
// the session's issue, in stream order (others are ignored); it is called only
// for a session that its own events leave live, since only then can a user
// event have ended it. Nothing after the end belongs to the session: a later
// reactivation or revoke-all is the user's history, not the session's. The
// HTTP history endpoint and the auditors' timeline both use this rule.
func SessionHistory(own []Event, userEvents func() ([]Event, error)) ([]Event, error) {
	var s Session
	for _, e := range own {
		_ = s.Apply(e)
	}
	if !s.Live() {
		return own, nil
	}
	user, err := userEvents()
	if err != nil {
		return nil, err
	}
	for _, e := range user {
		if e.Seq > s.IssuedSeq && e.Type().EndsSessions() {
			return append(own[:len(own):len(own)], e), nil
		}
	}
	return own, nil
}
