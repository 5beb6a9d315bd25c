package main

// The sequential specification of one session, as a porcupine model, and
// the tests that show the checker accepts what the specification allows and
// refuses what it does not. TestLinearizableAcrossInstances
// (linearizability_e2e_test.go) checks the histories a cluster produces
// against it.
//
// A session is alive or ended, and alive it has a current refresh-token
// generation cur (0 at issue). Every operation presents a token of the
// session (a refresh token of generation g, or an access token):
//
//	refresh(g)             alive, g == cur:   200 with generation cur+1; cur becomes cur+1 (rotated)
//	                       alive, g == cur-1: 200 with generation cur; nothing changes (tolerated: the
//	                                          tests run well inside the reuse grace window)
//	                       alive, g < cur-1:  400 invalid_grant; the session ends (reuse detected)
//	                       ended, or g > cur: 400 invalid_grant; nothing changes
//	sign-out (RFC 7009)    200; the session ends (a refresh token newer than cur is not genuine: nothing changes)
//	admin revoke           alive: 204, the session ends; ended: 404
//	introspect(refresh g)  active iff alive and g == cur
//	introspect(access)     active iff alive (the tests' access tokens outlive them)
//
// An operation whose outcome the client does not know (a 503, a transport
// error, a timeout) may or may not have taken effect, at any time after it
// was sent: the history gives it no return (a return after every other
// operation) and the model lets it take effect or not.

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// linKind is what an operation on a session does.
type linKind uint8

const (
	linRefresh           linKind = iota // POST /oauth2/token, grant_type=refresh_token
	linSignOut                          // POST /oauth2/revoke
	linAdminRevoke                      // DELETE /v1/sessions/{id}
	linIntrospectRefresh                // POST /oauth2/introspect with a refresh token
	linIntrospectAccess                 // POST /oauth2/introspect with an access token
)

func (k linKind) String() string {
	switch k {
	case linRefresh:
		return "refresh"
	case linSignOut:
		return "sign-out"
	case linAdminRevoke:
		return "admin-revoke"
	case linIntrospectRefresh:
		return "introspect-refresh"
	case linIntrospectAccess:
		return "introspect-access"
	}
	return fmt.Sprintf("linKind(%d)", uint8(k))
}

// linInput is an operation as sent.
type linInput struct {
	Session string // the partition
	Kind    linKind
	// Gen is the generation of the refresh token presented (refresh,
	// introspect-refresh, sign-out with a refresh token).
	Gen uint32
	// Access: a sign-out with an access token instead of a refresh token.
	Access bool
}

// linOutput is the answer.
type linOutput struct {
	// Unknown: no answer that tells (503, transport error, timeout); the
	// operation may or may not have taken effect.
	Unknown bool
	// OK: refresh 200 (false: 400 invalid_grant); admin revoke 204 (false:
	// 404); sign-out 200 (always).
	OK bool
	// Gen is the generation of the refresh token a refresh returned.
	Gen uint32
	// Active is introspection's answer.
	Active bool
}

// linState is a session's state. Every ended session is linEnded: once it has
// ended, its generation no longer matters.
type linState struct {
	Alive bool
	Cur   uint32
}

var (
	linIssued = linState{Alive: true}
	linEnded  = linState{}
)

// linStep returns the states s can move to by the operation in with answer
// out (none: the answer is impossible in s).
func linStep(s linState, in linInput, out linOutput) []linState {
	switch in.Kind {
	case linRefresh:
		next, ok, gen := linRefreshOutcome(s, in.Gen)
		switch {
		case out.Unknown:
			return linEither(s, next)
		case out.OK == ok && (!ok || out.Gen == gen):
			return []linState{next}
		}
	case linSignOut:
		next := linEnded
		if !in.Access && s.Alive && in.Gen > s.Cur {
			next = s // not a genuine token of the session: changes nothing
		}
		if out.Unknown {
			return linEither(s, next)
		}
		if out.OK {
			return []linState{next}
		}
	case linAdminRevoke:
		switch {
		case out.Unknown:
			return linEither(s, linEnded)
		case out.OK && s.Alive:
			return []linState{linEnded}
		case !out.OK && !s.Alive:
			return []linState{s}
		}
	case linIntrospectRefresh:
		if out.Unknown || out.Active == (s.Alive && in.Gen == s.Cur) {
			return []linState{s}
		}
	case linIntrospectAccess:
		if out.Unknown || out.Active == s.Alive {
			return []linState{s}
		}
	}
	return nil
}

// linRefreshOutcome is what refresh(g) does in s: the next state, whether it
// answers 200, and the generation of the token it returns then.
func linRefreshOutcome(s linState, g uint32) (next linState, ok bool, gen uint32) {
	switch {
	case !s.Alive || g > s.Cur:
		return s, false, 0
	case g == s.Cur:
		return linState{Alive: true, Cur: s.Cur + 1}, true, s.Cur + 1
	case g+1 == s.Cur:
		return s, true, s.Cur
	default:
		return linEnded, false, 0
	}
}

// linEither is an operation of unknown outcome: it took effect (next) or not (s).
func linEither(s, next linState) []linState {
	if s == next {
		return []linState{s}
	}
	return []linState{s, next}
}

// linMeta is what a recorded operation carries besides input and output,
// for the visualization and for failure reports.
type linMeta struct {
	Instance string // which ledger answered
	Answer   string // status and error, or the transport error
}

func describeLinOp(input, output any) string {
	in, out := input.(linInput), output.(linOutput)
	var op string
	switch in.Kind {
	case linRefresh:
		op = fmt.Sprintf("refresh(g%d)", in.Gen)
	case linSignOut:
		if in.Access {
			op = "sign-out(access)"
		} else {
			op = fmt.Sprintf("sign-out(g%d)", in.Gen)
		}
	case linAdminRevoke:
		op = "admin-revoke"
	case linIntrospectRefresh:
		op = fmt.Sprintf("introspect(g%d)", in.Gen)
	case linIntrospectAccess:
		op = "introspect(access)"
	}
	var res string
	switch {
	case out.Unknown:
		res = "unknown"
	case in.Kind == linRefresh && out.OK:
		res = fmt.Sprintf("ok g%d", out.Gen)
	case in.Kind == linRefresh:
		res = "invalid_grant"
	case in.Kind == linSignOut:
		res = "200"
	case in.Kind == linAdminRevoke && out.OK:
		res = "204"
	case in.Kind == linAdminRevoke:
		res = "404"
	case out.Active:
		res = "active"
	default:
		res = "inactive"
	}
	return op + " → " + res
}

func describeLinState(state any) string {
	s := state.(linState)
	if !s.Alive {
		return "ended"
	}
	return fmt.Sprintf("alive g%d", s.Cur)
}

// partitionBySession splits a history into one history per session.
func partitionBySession(history []porcupine.Operation) [][]porcupine.Operation {
	index := map[string]int{}
	var parts [][]porcupine.Operation
	for _, op := range history {
		sid := op.Input.(linInput).Session
		i, ok := index[sid]
		if !ok {
			i = len(parts)
			index[sid] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

// sessionModel is the model of sessions, partitioned by session.
func sessionModel() porcupine.Model {
	nm := &porcupine.NondeterministicModel{
		Partition: partitionBySession,
		Init:      func() []any { return []any{linIssued} },
		Step: func(state, input, output any) []any {
			var next []any
			for _, s := range linStep(state.(linState), input.(linInput), output.(linOutput)) {
				next = append(next, s)
			}
			return next
		},
		Hash: func(state any) uint64 {
			s := state.(linState)
			if !s.Alive {
				return math.MaxUint64
			}
			return uint64(s.Cur)
		},
		DescribeOperation: describeLinOp,
		DescribeState:     describeLinState,
		DescribeOperationMetadata: func(info any) string {
			m, ok := info.(linMeta)
			if !ok {
				return ""
			}
			return fmt.Sprintf("instance %s: %s", m.Instance, m.Answer)
		},
	}
	return nm.ToModel()
}

// linVerdict is the check of one session's history.
type linVerdict struct {
	Result porcupine.CheckResult
	Info   porcupine.LinearizationInfo
	// Culprit is, when the history is not linearizable, the operation that
	// cannot follow the longest linearizable prefix: of those left out of it,
	// the one that returned first.
	Culprit *porcupine.Operation
	// Description says why, for a failure message.
	Description string
}

// checkSessionHistory checks one session's history.
func checkSessionHistory(history []porcupine.Operation, timeout time.Duration) linVerdict {
	model := sessionModel()
	res, info := porcupine.CheckOperationsVerbose(model, history, timeout)
	v := linVerdict{Result: res, Info: info}
	if res != porcupine.Illegal {
		return v
	}
	var longest []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, lin := range part {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	states := []linState{linIssued}
	for _, op := range longest {
		var next []linState
		for _, s := range states {
			for _, n := range linStep(s, op.Input.(linInput), op.Output.(linOutput)) {
				if !slices.Contains(next, n) {
					next = append(next, n)
				}
			}
		}
		states = next
	}
	var rest []porcupine.Operation
	for _, op := range history {
		if !slices.ContainsFunc(longest, func(l porcupine.Operation) bool { return sameLinOp(l, op) }) {
			rest = append(rest, op)
		}
	}
	slices.SortStableFunc(rest, func(a, b porcupine.Operation) int { return compareInt64(a.Return, b.Return) })
	var b strings.Builder
	var stateNames []string
	for _, s := range states {
		stateNames = append(stateNames, describeLinState(s))
	}
	fmt.Fprintf(&b, "the longest linearizable prefix has %d of %d operations and leaves the session %s", len(longest), len(history), strings.Join(stateNames, " or "))
	if len(rest) > 0 {
		v.Culprit = &rest[0]
		fmt.Fprintf(&b, "; then %s cannot come next", formatLinOp(rest[0]))
	}
	if n := len(longest); n > 0 {
		b.WriteString("; the prefix ends:")
		for _, op := range longest[max(0, n-4):] {
			b.WriteString("\n\t\t")
			b.WriteString(formatLinOp(op))
		}
	}
	v.Description = b.String()
	return v
}

// sameLinOp reports whether a and b are one recorded operation.
func sameLinOp(a, b porcupine.Operation) bool {
	return a.ClientId == b.ClientId && a.Call == b.Call && a.Return == b.Return && a.Input == b.Input && a.Output == b.Output
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// formatLinOp describes an operation with its client, its times (in ms from
// the start) and its metadata.
func formatLinOp(op porcupine.Operation) string {
	ret := fmt.Sprintf("%.1fms", float64(op.Return)/1e6)
	if op.Output.(linOutput).Unknown {
		ret = "never"
	}
	s := fmt.Sprintf("%s [client %d, called %.1fms, returned %s]", describeLinOp(op.Input, op.Output), op.ClientId, float64(op.Call)/1e6, ret)
	if m, ok := op.Metadata.(linMeta); ok {
		s += fmt.Sprintf(" on %s (%s)", m.Instance, m.Answer)
	}
	return s
}

// writeLinVisualization writes the visualization of a check, with
// annotations (faults, say), into dir and returns its path.
func writeLinVisualization(dir, name string, v linVerdict, annotations []porcupine.Annotation) (string, error) {
	path := filepath.Join(dir, name+".html")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	v.Info.AddAnnotations(annotations)
	if err := porcupine.Visualize(sessionModel(), v.Info, f); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// --- unit tests of the model and the checker ---

// linNever is the return time of an operation whose outcome is unknown.
const linNever = math.MaxInt64

type linOpSpec struct {
	client    int
	call, ret int64
	kind      linKind
	gen       uint32
	access    bool
	out       linOutput
	session   string // "" is "s1"
}

func linHistory(specs ...linOpSpec) []porcupine.Operation {
	var h []porcupine.Operation
	for _, s := range specs {
		sid := s.session
		if sid == "" {
			sid = "s1"
		}
		h = append(h, porcupine.Operation{
			ClientId: s.client, Call: s.call, Return: s.ret,
			Input:  linInput{Session: sid, Kind: s.kind, Gen: s.gen, Access: s.access},
			Output: s.out,
		})
	}
	return h
}

// Shorthands for answers.
var (
	linUnknown  = linOutput{Unknown: true}
	linOK       = linOutput{OK: true}
	linRefused  = linOutput{} // refresh 400 invalid_grant, admin revoke 404
	linActive   = linOutput{Active: true}
	linInactive = linOutput{}
)

func linOKGen(g uint32) linOutput { return linOutput{OK: true, Gen: g} }

func TestLinearizabilityModelAcceptsAndRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		ok      bool
	}{
		// (a) An access token is inactive once a revocation has returned.
		{"introspect access after sign-out returned: inactive", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linSignOut, access: true, out: linOK},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linIntrospectAccess, out: linInactive},
		), true},
		{"introspect access after sign-out returned: active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linSignOut, access: true, out: linOK},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linIntrospectAccess, out: linActive},
		), false},
		{"introspect access after admin revoke returned: active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linAdminRevoke, out: linOK},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linIntrospectAccess, out: linActive},
		), false},
		{"introspect access concurrent with sign-out: active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linSignOut, access: true, out: linOK},
			linOpSpec{client: 1, call: 5, ret: 30, kind: linIntrospectAccess, out: linActive},
		), true},
		{"two introspections concurrent with sign-out: inactive, then active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 100, kind: linSignOut, access: true, out: linOK},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linIntrospectAccess, out: linInactive},
			linOpSpec{client: 2, call: 30, ret: 40, kind: linIntrospectAccess, out: linActive},
		), false},
		// (b) A refresh token is inactive once its rotation has returned.
		{"introspect refresh g0 after refresh(g0) returned: active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linIntrospectRefresh, gen: 0, out: linActive},
		), false},
		{"introspect refresh after refresh(g0) returned: g0 inactive, g1 active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linIntrospectRefresh, gen: 0, out: linInactive},
			linOpSpec{client: 2, call: 20, ret: 30, kind: linIntrospectRefresh, gen: 1, out: linActive},
		), true},
		{"introspect refresh g0 concurrent with refresh(g0): active", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 5, ret: 30, kind: linIntrospectRefresh, gen: 0, out: linActive},
		), true},
		{"introspect refresh g1 after refresh(g1) was tolerated-then-rotated: inactive", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 0, call: 20, ret: 30, kind: linRefresh, gen: 1, out: linOKGen(2)},
			linOpSpec{client: 1, call: 40, ret: 50, kind: linIntrospectRefresh, gen: 1, out: linActive},
		), false},
		// (c) Two refreshes of one token: the second, after the first
		// returned, is tolerated and answers the same generation; it
		// cannot rotate again or be refused.
		{"refresh(g0) twice in sequence: the same generation", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linRefresh, gen: 0, out: linOKGen(1)},
		), true},
		{"refresh(g0) twice concurrently: the same generation", linHistory(
			linOpSpec{client: 0, call: 0, ret: 20, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 5, ret: 15, kind: linRefresh, gen: 0, out: linOKGen(1)},
		), true},
		{"refresh(g0) twice in sequence: two rotations", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linRefresh, gen: 0, out: linOKGen(2)},
		), false},
		{"refresh(g0) twice concurrently: two rotations", linHistory(
			linOpSpec{client: 0, call: 0, ret: 20, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 5, ret: 15, kind: linRefresh, gen: 0, out: linOKGen(2)},
		), false},
		{"refresh(g0) twice in sequence: the second refused", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linRefresh, gen: 0, out: linRefused},
		), false},
		{"refresh(g0) concurrent with the rotation of g1: refused as reuse, session ends", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 0, call: 20, ret: 30, kind: linRefresh, gen: 1, out: linOKGen(2)},
			linOpSpec{client: 1, call: 25, ret: 40, kind: linRefresh, gen: 0, out: linRefused},
			linOpSpec{client: 0, call: 50, ret: 60, kind: linRefresh, gen: 2, out: linRefused},
			linOpSpec{client: 2, call: 50, ret: 60, kind: linIntrospectAccess, out: linInactive},
		), true},
		{"reuse detected, then the newest token still refreshes", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 0, call: 20, ret: 30, kind: linRefresh, gen: 1, out: linOKGen(2)},
			linOpSpec{client: 1, call: 40, ret: 50, kind: linRefresh, gen: 0, out: linRefused},
			linOpSpec{client: 0, call: 60, ret: 70, kind: linRefresh, gen: 2, out: linOKGen(3)},
		), false},
		{"refresh(g0) after g0 was rotated out twice: 200", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 0, call: 20, ret: 30, kind: linRefresh, gen: 1, out: linOKGen(2)},
			linOpSpec{client: 1, call: 40, ret: 50, kind: linRefresh, gen: 0, out: linOKGen(2)},
		), false},
		// (d) A refresh cannot return a generation that was never current.
		{"refresh(g0) returns g5", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(5)},
		), false},
		{"refresh(g0) returns g0", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(0)},
		), false},
		// Ended sessions.
		{"refresh after sign-out returned: 200", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linSignOut, gen: 0, out: linOK},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linRefresh, gen: 0, out: linOKGen(1)},
		), false},
		{"admin revoke twice in sequence: 204 and 404", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linAdminRevoke, out: linOK},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linAdminRevoke, out: linRefused},
			linOpSpec{client: 1, call: 40, ret: 50, kind: linSignOut, access: true, out: linOK},
		), true},
		{"admin revoke twice concurrently: 204 both", linHistory(
			linOpSpec{client: 0, call: 0, ret: 20, kind: linAdminRevoke, out: linOK},
			linOpSpec{client: 1, call: 5, ret: 15, kind: linAdminRevoke, out: linOK},
		), false},
		{"admin revoke of a live session: 404", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linAdminRevoke, out: linRefused},
		), false},
		// Unknown outcomes.
		{"unknown refresh(g0) did not happen: g0 stays active and rotates", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linRefresh, gen: 0, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linIntrospectRefresh, gen: 0, out: linActive},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linRefresh, gen: 0, out: linOKGen(1)},
		), true},
		{"unknown refresh(g0) happened: g0 inactive, then tolerated", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linRefresh, gen: 0, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linIntrospectRefresh, gen: 0, out: linInactive},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 50, ret: 60, kind: linIntrospectRefresh, gen: 1, out: linActive},
		), true},
		{"unknown refresh(g0) happened late: g0 active, then inactive", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linRefresh, gen: 0, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linIntrospectRefresh, gen: 0, out: linActive},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linIntrospectRefresh, gen: 0, out: linInactive},
		), true},
		{"unknown refresh(g0) cannot be undone: g0 inactive, then active", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linRefresh, gen: 0, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linIntrospectRefresh, gen: 0, out: linInactive},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linIntrospectRefresh, gen: 0, out: linActive},
		), false},
		{"unknown refresh(g0) rotates once only: g1 and then g2 from g0", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linRefresh, gen: 0, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linRefresh, gen: 0, out: linOKGen(2)},
		), false},
		{"unknown refresh of an old token may have revoked the session", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 0, call: 20, ret: 30, kind: linRefresh, gen: 1, out: linOKGen(2)},
			linOpSpec{client: 1, call: 40, ret: linNever, kind: linRefresh, gen: 0, out: linUnknown},
			linOpSpec{client: 0, call: 50, ret: 60, kind: linRefresh, gen: 2, out: linOKGen(3)},
			linOpSpec{client: 0, call: 70, ret: 80, kind: linRefresh, gen: 3, out: linRefused},
			linOpSpec{client: 2, call: 90, ret: 100, kind: linIntrospectAccess, out: linInactive},
		), true},
		{"unknown sign-out: active, then inactive", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linSignOut, access: true, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linIntrospectAccess, out: linActive},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linIntrospectAccess, out: linInactive},
		), true},
		{"unknown admin revoke: the session may go on", linHistory(
			linOpSpec{client: 0, call: 0, ret: linNever, kind: linAdminRevoke, out: linUnknown},
			linOpSpec{client: 1, call: 10, ret: 20, kind: linRefresh, gen: 0, out: linOKGen(1)},
			linOpSpec{client: 1, call: 30, ret: 40, kind: linAdminRevoke, out: linOK},
		), true},
		// Sessions are independent.
		{"two sessions: each rotates from g0 to g1", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1), session: "s1"},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linRefresh, gen: 0, out: linOKGen(1), session: "s2"},
			linOpSpec{client: 0, call: 40, ret: 50, kind: linSignOut, access: true, out: linOK, session: "s1"},
			linOpSpec{client: 1, call: 60, ret: 70, kind: linIntrospectAccess, out: linActive, session: "s2"},
		), true},
		{"two sessions: a sign-out of one ends the other", linHistory(
			linOpSpec{client: 0, call: 0, ret: 10, kind: linSignOut, access: true, out: linOK, session: "s1"},
			linOpSpec{client: 1, call: 20, ret: 30, kind: linIntrospectAccess, out: linActive, session: "s2"},
			linOpSpec{client: 1, call: 40, ret: 50, kind: linIntrospectAccess, out: linActive, session: "s1"},
		), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(sessionModel(), tc.history); got != tc.ok {
				t.Fatalf("linearizable: %v, want %v", got, tc.ok)
			}
		})
	}
}

// TestLinearizabilityModelReportsTheCulprit checks the failure report the
// cluster test gives: the operation that cannot follow the longest
// linearizable prefix, and a visualization.
func TestLinearizabilityModelReportsTheCulprit(t *testing.T) {
	h := linHistory(
		linOpSpec{client: 0, call: 0, ret: 10, kind: linRefresh, gen: 0, out: linOKGen(1)},
		linOpSpec{client: 0, call: 20, ret: 30, kind: linRefresh, gen: 1, out: linOKGen(2)},
		linOpSpec{client: 1, call: 25, ret: linNever, kind: linRefresh, gen: 2, out: linUnknown},
		linOpSpec{client: 2, call: 40, ret: 50, kind: linSignOut, access: true, out: linOK},
		linOpSpec{client: 0, call: 60, ret: 70, kind: linIntrospectRefresh, gen: 2, out: linActive},
		linOpSpec{client: 0, call: 80, ret: 90, kind: linIntrospectAccess, out: linInactive},
	)
	h[4].Metadata = linMeta{Instance: "B", Answer: "200"}
	v := checkSessionHistory(h, 10*time.Second)
	if v.Result != porcupine.Illegal {
		t.Fatalf("result %v, want Illegal", v.Result)
	}
	if v.Culprit == nil || v.Culprit.Input.(linInput).Kind != linIntrospectRefresh {
		t.Fatalf("culprit %v; %s", v.Culprit, v.Description)
	}
	for _, want := range []string{"4 of 6", "ended", "introspect(g2) → active", "on B (200)"} {
		if !strings.Contains(v.Description, want) {
			t.Fatalf("description lacks %q:\n%s", want, v.Description)
		}
	}
	path, err := writeLinVisualization(t.TempDir(), "s1", v, []porcupine.Annotation{{Tag: "faults", Start: 35, Description: "a fault"}})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("visualization %s: %v", path, err)
	}
	if v := checkSessionHistory(h[:4], 10*time.Second); v.Result != porcupine.Ok || v.Culprit != nil {
		t.Fatalf("the history without the stale introspection: %v %s", v.Result, v.Description)
	}
}
