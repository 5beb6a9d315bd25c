package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/internal/poll"
)

// The cluster run of the linearizability check: clients send random
// operations on a few sessions to random ledger instances on one JetStream
// cluster while servers are stopped and a ledger is killed, and each
// session's history must be linearizable under the model in
// linearizability_model_test.go.
//
// Each of linSlots slots has linClients clients sharing one session at a
// time and its tokens; when they have seen it end, the slot issues the next.
// Every operation is recorded with its call and return times on the test's
// monotonic clock. A 503, a transport error, or a client giving up early
// (linGiveUpPercent of the operations) is an unknown outcome: it may take
// effect at any time after it was sent, and a refresh's new token is not
// learned. A refused connection reached no ledger and is left out.
//
// SESSIONLEDGER_LIN_INTROSPECT=0 leaves introspection out of the operations;
// SESSIONLEDGER_LIN_SEED=n fixes the random choices (the interleaving still
// varies from run to run).

const (
	// linReuseGrace is the instances' reuse grace window: far longer than
	// the test, so that the model takes every refresh of the token rotated
	// out last as tolerated.
	linReuseGrace = 10 * time.Minute
	linSlots      = 12 // sessions under way at once
	linClients    = 3  // clients of each
	linUsers      = 6  // the slots' sessions belong to this many users, so sessions of one user race
	// linOpsAfterEnd is how many operations a slot sends on a session after
	// a client saw it end, before it issues the next one.
	linOpsAfterEnd = 6
	// linWritesPerPhase is how many writes must succeed between faults.
	linWritesPerPhase = 600
	linCheckTimeout   = 30 * time.Second
	linHTTPTimeout    = 10 * time.Second
	linRetryPause     = 20 * time.Millisecond // pacing after a failed issue, as a real client would
	// linGiveUpPercent of the operations are sent by a client that gives
	// up after a random time under linGiveUpAfter: their outcome is
	// unknown, and the ledger may carry them out after the client left.
	linGiveUpPercent = 3
	linGiveUpAfter   = 30 * time.Millisecond
	linThink         = 40 * time.Millisecond // the most a client waits between operations
	// linEndPerMille of the operations on a session no client saw end are
	// meant to end it: a sign-out, an admin revoke, or a refresh of a token
	// two or more generations old.
	linEndPerMille = 6
)

// linInstance is a ledger the clients may send to.
type linInstance struct {
	name string
	url  string
	up   atomic.Bool
}

// linRecord is one operation as a client saw it.
type linRecord struct {
	client    int // the client incarnation: a client that saw no answer goes on as a new one
	in        linInput
	out       linOutput
	call, ret int64 // nanoseconds since the start
	meta      linMeta
}

// linRun is a session the clients of a slot work on, and what they know of it.
type linRun struct {
	id      string
	refresh map[uint32]string // refresh tokens the clients hold, by generation
	newest  uint32
	access  []string
	ended   bool // a client saw it end
	after   int  // operations sent since
}

// linSlot is where a few clients share one session at a time.
type linSlot struct {
	index int
	mu    sync.Mutex
	run   *linRun
}

// linRole is how a client of a slot behaves (see plan).
type linRole int

const (
	linLead linRole = iota
	linHot
	linCalm
)

// linPlan is an operation to send.
type linPlan struct {
	idle   bool // none: the client waits a moment
	run    *linRun
	in     linInput
	token  string
	newest uint32 // the newest generation the clients held when it was planned
}

// linWorld is the whole run.
type linWorld struct {
	t          *testing.T
	start      time.Time
	seed       uint64
	introspect bool
	stop       atomic.Bool
	wg         sync.WaitGroup

	imu       sync.Mutex
	instances []*linInstance

	mu        sync.Mutex
	records   []linRecord
	clientIDs int
	writes    int // writes with a known outcome that took effect
	dropped   map[string]int
	ends      map[string]int  // how the clients saw sessions end
	calm      map[string]bool // session → whether of a calm slot
	odd       []string        // answers the API does not document
	forks     []string
	faults    []porcupine.Annotation
}

func (w *linWorld) since() int64 { return int64(time.Since(w.start)) }

func (w *linWorld) newClientID() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clientIDs++
	return w.clientIDs
}

func (w *linWorld) addInstance(name, url string) *linInstance {
	in := &linInstance{name: name, url: url}
	in.up.Store(true)
	w.imu.Lock()
	w.instances = append(w.instances, in)
	w.imu.Unlock()
	return in
}

// pick returns a random instance that is up.
func (w *linWorld) pick(rng *rand.Rand) *linInstance {
	w.imu.Lock()
	defer w.imu.Unlock()
	var up []*linInstance
	for _, in := range w.instances {
		if in.up.Load() {
			up = append(up, in)
		}
	}
	return up[rng.IntN(len(up))]
}

func (w *linWorld) fault(format string, args ...any) {
	at := w.since()
	what := fmt.Sprintf(format, args...)
	w.mu.Lock()
	w.faults = append(w.faults, porcupine.Annotation{Tag: "faults", Start: at, Description: what, BackgroundColor: "#f9c0c0"})
	w.mu.Unlock()
	w.t.Logf("%6.2fs fault: %s", float64(at)/1e9, what)
}

func (w *linWorld) note(list *[]string, format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	*list = append(*list, fmt.Sprintf(format, args...))
}

func (w *linWorld) writesDone() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes
}

// waitWrites waits until n more writes have taken effect with a known
// outcome: the cluster serves writes again after a fault.
func (w *linWorld) waitWrites(t *testing.T, n int, after string) {
	t.Helper()
	from := w.writesDone()
	poll.For(t, 60*time.Second, func() bool { return w.writesDone() >= from+n }, func() string {
		return fmt.Sprintf("after %s: %d of %d writes took effect", after, w.writesDone()-from, n)
	})
}

// TestLinearizableAcrossInstances runs clients against two in-process ledger
// instances and a third in a child process, all on one 3-node JetStream
// cluster, stops the stream leader's server twice, kills the child with
// SIGKILL and starts another, and checks that each session's history is
// linearizable.
func TestLinearizableAcrossInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster run with faults")
	}
	w := &linWorld{t: t, introspect: os.Getenv("SESSIONLEDGER_LIN_INTROSPECT") != "0", dropped: map[string]int{}, ends: map[string]int{}, calm: map[string]bool{}}
	w.seed = rand.Uint64()
	if s := os.Getenv("SESSIONLEDGER_LIN_SEED"); s != "" {
		var err error
		if w.seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SESSIONLEDGER_LIN_SEED: %v", err)
		}
	}
	t.Logf("seed %d (SESSIONLEDGER_LIN_SEED), introspection %v (SESSIONLEDGER_LIN_INTROSPECT)", w.seed, w.introspect)
	began := time.Now()

	c, hs, dir := bootLinCluster(t)
	child := startLinChild(t, c, dir)
	w.start = time.Now()
	w.addInstance("A", hs[0].url)
	w.addInstance("B", hs[1].url)
	cInst := w.addInstance("C", child.url)
	t.Logf("cluster and three ledgers up in %v", time.Since(began).Round(time.Millisecond))

	slots := make([]*linSlot, linSlots)
	for i := range slots {
		slots[i] = &linSlot{index: i}
		for j := 0; j < linClients; j++ {
			w.wg.Add(1)
			go w.client(slots[i], i*linClients+j)
		}
	}
	stopped := false
	stopClients := func() {
		if !stopped {
			stopped = true
			w.stop.Store(true)
			w.wg.Wait()
		}
	}
	t.Cleanup(stopClients) // also when a wait below fails

	w.waitWrites(t, linWritesPerPhase, "the start")
	leader := waitLinStreamLeader(t, c)
	c.Stop(leader)
	w.fault("stopped nats-server n%d, the stream leader", leader+1)
	w.waitWrites(t, linWritesPerPhase, "the first failover")

	cInst.up.Store(false)
	child.kill9(t)
	w.fault("killed ledger C (SIGKILL)")
	w.waitWrites(t, linWritesPerPhase, "the kill")

	c.Restart(t, leader)
	w.fault("restarted nats-server n%d", leader+1)
	w.waitWrites(t, linWritesPerPhase, fmt.Sprintf("the restart of n%d", leader+1))

	child2 := startLinChild(t, c, dir)
	w.addInstance("D", child2.url)
	w.fault("started ledger D, a new child process")
	w.waitWrites(t, linWritesPerPhase, "the start of D")

	leader2 := waitLinStreamLeader(t, c)
	c.Stop(leader2)
	w.fault("stopped nats-server n%d, the stream leader", leader2+1)
	w.waitWrites(t, linWritesPerPhase, "the second failover")
	stopClients()
	end := w.since()
	var faults []string
	for _, f := range w.faults {
		faults = append(faults, fmt.Sprintf("%.2fs %s", float64(f.Start)/1e9, f.Description))
	}
	t.Logf("%.2fs of operations; %d faults injected: %s", float64(end)/1e9, len(faults), strings.Join(faults, "; "))

	for _, l := range []struct {
		name string
		logs *syncBuffer
	}{{"A", hs[0].logs}, {"B", hs[1].logs}, {"C", child.logs}, {"D", child2.logs}} {
		logLinProblems(t, l.name, l.logs.String())
	}
	w.check(t, end)
	t.Logf("whole test: %v", time.Since(began).Round(time.Millisecond))
}

// bootLinCluster is bootCluster with two instances whose reuse grace window
// outlasts the test.
func bootLinCluster(t *testing.T) (*natstest.Cluster, []*ledgerHarness, string) {
	t.Helper()
	return bootClusterWith(t, 2, func(cfg *Config) { cfg.ReuseGrace = linReuseGrace })
}

// startLinChild starts a ledger in a child process on the cluster, with the
// in-process instances' data dir (their keys) and reuse grace window.
func startLinChild(t *testing.T, c *natstest.Cluster, dir string) *process {
	t.Helper()
	return startLedger(t, []string{
		"--nats-url", c.URLs(), "--nats-user", natstest.LedgerAuth.User, "--replicas", "3",
		"--data-dir", dir, "--reuse-grace", linReuseGrace.String(), "--checkpoint-interval", "200ms",
	}, "SESSIONLEDGER_ADMIN_TOKEN="+testAdminToken, "SESSIONLEDGER_NATS_PASSWORD="+natstest.LedgerAuth.Password)
}

func waitLinStreamLeader(t *testing.T, c *natstest.Cluster) int {
	t.Helper()
	leader := -1
	poll.Until(t, 30*time.Second, func() error {
		if leader = c.StreamLeader(eventstore.StreamName); leader < 0 {
			return errors.New("no stream leader")
		}
		return nil
	})
	return leader
}

// client sends random operations on its slot's session until the run stops.
func (w *linWorld) client(slot *linSlot, n int) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(w.seed, uint64(n)))
	// Its own connections, closed when it stops: none is left idle to hold
	// up a ledger's graceful shutdown.
	httpc := &http.Client{Transport: &http.Transport{}, Timeout: linHTTPTimeout}
	defer httpc.CloseIdleConnections()
	id := w.newClientID()
	role := linHot
	switch {
	case n%linClients == 0:
		role = linLead
	case slot.index%2 == 1:
		role = linCalm
	}
	wrote := false // the last operation was a write that took effect
	for !w.stop.Load() {
		// A moment between operations, as an app would take (pacing, not a
		// check), except right after a write: a client uses its new token,
		// and a service checks a token it revoked, at once.
		if !wrote {
			time.Sleep(time.Duration(rng.IntN(int(linThink/time.Microsecond))) * time.Microsecond)
		}
		slot.mu.Lock()
		if r := slot.run; r == nil || (r.ended && r.after >= linOpsAfterEnd) {
			if !w.issue(slot, httpc, rng) {
				slot.mu.Unlock()
				return
			}
		}
		p := slot.run.plan(rng, w.introspect, role)
		slot.run.after += btoi(slot.run.ended)
		slot.mu.Unlock()
		if p.idle {
			continue
		}

		inst := w.pick(rng)
		var timeout time.Duration // the client gives up early
		if rng.IntN(100) < linGiveUpPercent {
			timeout = time.Duration(rng.IntN(int(linGiveUpAfter/time.Microsecond))) * time.Microsecond
		}
		call := w.since()
		out, meta, learned, sent := w.send(httpc, inst, p, timeout)
		ret := w.since()
		wrote = sent && !out.Unknown && out.OK && (p.in.Kind == linRefresh || p.in.Kind == linSignOut || p.in.Kind == linAdminRevoke)
		if !sent {
			continue // the connection was refused: nothing reached a ledger
		}
		slot.mu.Lock()
		p.run.learn(w, p, out, learned)
		slot.mu.Unlock()
		w.record(linRecord{client: id, in: p.in, out: out, call: call, ret: ret, meta: meta})
		if out.Unknown {
			id = w.newClientID() // its operation may still take effect: it goes on as another client
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// issue opens the slot's next session (the caller holds slot.mu). It
// returns false if the run stopped first.
func (w *linWorld) issue(slot *linSlot, httpc *http.Client, rng *rand.Rand) bool {
	body := fmt.Sprintf(`{"user_id":"lin-user-%d","policy":"mobile"}`, slot.index%linUsers)
	for !w.stop.Load() {
		inst := w.pick(rng)
		req, err := http.NewRequest("POST", inst.url+"/v1/sessions", strings.NewReader(body))
		if err != nil {
			w.t.Error(err)
			return false
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", adminHeader.Get("Authorization"))
		status, out, err := linDo(httpc, req)
		if err == nil && status == http.StatusCreated {
			s := toSession(out)
			t, perr := domain.ParseRefreshToken(s.Refresh)
			if perr != nil || t.Generation != 0 || t.SessionID != s.ID || s.Access == "" {
				w.t.Errorf("issue on %s answered %v", inst.name, out)
				return false
			}
			slot.run = &linRun{id: s.ID, refresh: map[uint32]string{0: s.Refresh}, access: []string{s.Access}}
			w.mu.Lock()
			w.calm[s.ID] = slot.index%2 == 1
			w.mu.Unlock()
			return true
		}
		if err == nil && status < 500 {
			w.t.Errorf("issue on %s: %d %v", inst.name, status, out)
			return false
		}
		time.Sleep(linRetryPause)
	}
	return false
}

// plan picks the next operation on r: mostly refreshes of the newest token
// and introspection, sometimes the token rotated out last, rarely
// (linEndPerMille) what ends the session: a sign-out, an admin revoke, a
// refresh of an older token.
// Once a client saw the session end, anything goes.
//
// The lead client of a slot refreshes most. In the even ("hot") slots the
// others refresh too; in the odd ("calm") ones they do not, and idle often.
// A refresh of the newest token the clients hold is refused as reuse when
// the lead rotated twice before it was decided, which is common under load
// (a refresh that loses the append race to the lead's again and again is
// decided late), so sessions of hot slots mostly end that way after a few
// rotations, and only calm slots' sessions grow long.
func (r *linRun) plan(rng *rand.Rand, introspect bool, role linRole) linPlan {
	known := func() uint32 { // a generation the clients hold a token of
		for {
			g := uint32(rng.IntN(int(r.newest) + 1))
			if r.refresh[g] != "" {
				return g
			}
		}
	}
	older := func() (uint32, bool) { // two or more generations before the newest
		for i := 0; i < 4 && r.newest >= 2; i++ {
			if g := uint32(rng.IntN(int(r.newest) - 1)); r.refresh[g] != "" {
				return g, true
			}
		}
		return 0, false
	}
	refreshOf := func(kind linKind, g uint32) linPlan {
		return linPlan{run: r, in: linInput{Session: r.id, Kind: kind, Gen: g}, token: r.refresh[g], newest: r.newest}
	}
	accessOp := func(kind linKind) linPlan {
		return linPlan{run: r, in: linInput{Session: r.id, Kind: kind, Access: true}, token: r.access[rng.IntN(len(r.access))], newest: r.newest}
	}
	type option struct {
		weight int
		plan   func() (linPlan, bool)
	}
	always := func(p func() linPlan) func() (linPlan, bool) { return func() (linPlan, bool) { return p(), true } }
	previous := func(kind linKind) func() (linPlan, bool) {
		return func() (linPlan, bool) {
			if r.newest == 0 || r.refresh[r.newest-1] == "" {
				return linPlan{}, false
			}
			return refreshOf(kind, r.newest-1), true
		}
	}
	olderOf := func(kind linKind) func() (linPlan, bool) {
		return func() (linPlan, bool) {
			g, ok := older()
			return refreshOf(kind, g), ok
		}
	}
	signOut := func() linPlan {
		if rng.IntN(2) == 0 {
			return accessOp(linSignOut)
		}
		return refreshOf(linSignOut, known())
	}
	adminRevoke := func() linPlan {
		return linPlan{run: r, in: linInput{Session: r.id, Kind: linAdminRevoke}, newest: r.newest}
	}
	if !r.ended && role == linCalm {
		idle := 90 // percent
		if introspect {
			idle = 50
		}
		if rng.IntN(100) < idle {
			return linPlan{idle: true}
		}
	}
	if !r.ended && rng.IntN(1000) < linEndPerMille {
		switch rng.IntN(3) {
		case 0:
			if p, ok := olderOf(linRefresh)(); ok {
				return p
			}
		case 1:
			return adminRevoke()
		}
		return signOut()
	}
	refreshWeight := map[linRole]int{linLead: 300, linHot: 100}[role]
	previousWeight := map[linRole]int{linLead: 3, linHot: 3}[role]
	var options []option
	if r.ended {
		options = []option{
			{4, always(func() linPlan { return refreshOf(linRefresh, known()) })},
			{1, always(signOut)},
			{1, always(adminRevoke)},
		}
		if introspect {
			options = append(options,
				option{2, always(func() linPlan { return refreshOf(linIntrospectRefresh, known()) })},
				option{4, always(func() linPlan { return accessOp(linIntrospectAccess) })})
		}
	} else {
		options = []option{
			{refreshWeight, always(func() linPlan { return refreshOf(linRefresh, r.newest) })},
			{previousWeight, previous(linRefresh)},
		}
		if introspect {
			options = append(options,
				option{100, always(func() linPlan { return refreshOf(linIntrospectRefresh, r.newest) })},
				option{50, previous(linIntrospectRefresh)},
				option{30, olderOf(linIntrospectRefresh)},
				option{120, always(func() linPlan { return accessOp(linIntrospectAccess) })})
		}
	}
	total := 0
	for _, o := range options {
		total += o.weight
	}
	if total == 0 {
		return linPlan{idle: true}
	}
	for {
		x := rng.IntN(total)
		for _, o := range options {
			if x -= o.weight; x < 0 {
				if p, ok := o.plan(); ok {
					return p
				}
				break
			}
		}
	}
}

// learn takes in what an answer tells of the session (the caller holds the
// slot's lock).
func (r *linRun) learn(w *linWorld, p linPlan, out linOutput, learned session) {
	if out.Unknown {
		return
	}
	if !r.ended {
		defer func() {
			if r.ended { // this answer showed the end first
				what := describeLinOpKindOutcome(p.in, out)
				if p.in.Kind == linRefresh {
					what = fmt.Sprintf("refresh %d generations behind the newest held refused", p.newest-p.in.Gen)
				}
				w.mu.Lock()
				w.ends[what]++
				w.mu.Unlock()
			}
		}()
	}
	switch p.in.Kind {
	case linRefresh:
		if !out.OK {
			r.ended = true // refused: it has ended, or this refresh ended it
			break
		}
		if have := r.refresh[out.Gen]; have != "" && have != learned.Refresh {
			w.note(&w.forks, "session %s: two different refresh tokens of generation %d handed out", r.id, out.Gen)
		}
		r.refresh[out.Gen] = learned.Refresh
		r.newest = max(r.newest, out.Gen)
		r.access = append(r.access, learned.Access)
	case linSignOut, linAdminRevoke:
		r.ended = true
	case linIntrospectAccess:
		r.ended = r.ended || !out.Active
	}
}

func (w *linWorld) record(rec linRecord) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.records = append(w.records, rec)
	if !rec.out.Unknown && (rec.in.Kind == linRefresh || rec.in.Kind == linSignOut || rec.in.Kind == linAdminRevoke) && rec.out.OK {
		w.writes++
	}
}

// linDo sends req and returns the status and the decoded JSON body.
func linDo(httpc *http.Client, req *http.Request) (int, map[string]any, error) {
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var out map[string]any
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("body is not JSON: %q", b)
		}
	}
	return resp.StatusCode, out, nil
}

// send carries out p on inst and returns the answer as the model sees it,
// a description of it, and the tokens a refresh handed out. sent is false
// when the connection was refused: the request reached no ledger.
// A timeout above 0 is the client's own: it gives up then.
func (w *linWorld) send(httpc *http.Client, inst *linInstance, p linPlan, timeout time.Duration) (out linOutput, meta linMeta, learned session, sent bool) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var req *http.Request
	var err error
	form := func(path string, values url.Values, admin bool) {
		req, err = http.NewRequestWithContext(ctx, "POST", inst.url+path, strings.NewReader(values.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if admin {
				req.Header.Set("Authorization", adminHeader.Get("Authorization"))
			}
		}
	}
	switch p.in.Kind {
	case linRefresh:
		form("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {p.token}}, false)
	case linSignOut:
		form("/oauth2/revoke", url.Values{"token": {p.token}}, false)
	case linAdminRevoke:
		req, err = http.NewRequestWithContext(ctx, "DELETE", inst.url+"/v1/sessions/"+p.run.id, nil)
		if err == nil {
			req.Header.Set("Authorization", adminHeader.Get("Authorization"))
		}
	case linIntrospectRefresh, linIntrospectAccess:
		form("/oauth2/introspect", url.Values{"token": {p.token}}, true)
	}
	meta.Instance = inst.name
	if err != nil {
		w.t.Error(err)
		return linOutput{Unknown: true}, meta, session{}, false
	}
	status, body, err := linDo(httpc, req)
	switch {
	case err != nil && status == 0 && errors.Is(err, syscall.ECONNREFUSED):
		w.drop("connection refused (" + inst.name + ")")
		return linOutput{}, meta, session{}, false
	case err != nil:
		meta.Answer = fmt.Sprintf("transport error (status %d): %v", status, err)
		if timeout > 0 && errors.Is(err, context.DeadlineExceeded) {
			meta.Answer = fmt.Sprintf("the client gave up after %v", timeout)
		}
		return linOutput{Unknown: true}, meta, session{}, true
	}
	meta.Answer = strconv.Itoa(status)
	if e, ok := body["error"].(string); ok {
		meta.Answer += " " + e
		if status >= 500 {
			meta.Answer += fmt.Sprintf(" (%v)", body["error_description"])
		}
	}
	if status >= 500 {
		if status != http.StatusServiceUnavailable {
			w.note(&w.odd, "%s on %s: %s %v", describeLinOp(p.in, linOutput{Unknown: true}), inst.name, meta.Answer, body)
		}
		return linOutput{Unknown: true}, meta, session{}, true
	}
	odd := func() (linOutput, linMeta, session, bool) {
		w.note(&w.odd, "%s on %s: %s %v", p.in.Kind, inst.name, meta.Answer, body)
		return linOutput{Unknown: true}, meta, session{}, true
	}
	switch p.in.Kind {
	case linRefresh:
		switch {
		case status == http.StatusOK:
			learned = toSession(body)
			t, err := domain.ParseRefreshToken(learned.Refresh)
			if err != nil || t.SessionID != p.run.id || learned.ID != p.run.id || learned.Access == "" {
				return odd()
			}
			return linOutput{OK: true, Gen: t.Generation}, meta, learned, true
		case status == http.StatusBadRequest && body["error"] == "invalid_grant":
			return linOutput{}, meta, session{}, true
		}
	case linSignOut:
		if status == http.StatusOK {
			return linOutput{OK: true}, meta, session{}, true
		}
	case linAdminRevoke:
		switch status {
		case http.StatusNoContent:
			return linOutput{OK: true}, meta, session{}, true
		case http.StatusNotFound:
			return linOutput{}, meta, session{}, true
		}
	case linIntrospectRefresh, linIntrospectAccess:
		if status == http.StatusOK {
			active, ok := body["active"].(bool)
			if !ok || (active && body["sid"] != p.run.id) {
				return odd()
			}
			meta.Answer += fmt.Sprintf(" active:%v", active)
			return linOutput{Active: active}, meta, session{}, true
		}
	}
	return odd()
}

func (w *linWorld) drop(why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dropped[why]++
}

// check builds each session's history, checks them all, and reports.
func (w *linWorld) check(t *testing.T, end int64) {
	t.Helper()
	histories := map[string][]porcupine.Operation{}
	clients := map[string]map[int]int{} // per session: client incarnation → dense id
	var order []string
	unknown, unknownWhy := map[string]int{}, map[string]int{}
	spans := map[string][3]int64{} // status on instance → first and last call, count
	kinds := map[string]int{}
	total := 0
	for _, rec := range w.records {
		sid := rec.in.Session
		if rec.out.Unknown {
			unknown[rec.in.Kind.String()+" on "+rec.meta.Instance]++
			switch a := rec.meta.Answer; {
			case strings.HasPrefix(a, "the client gave up"):
				unknownWhy["the client gave up"]++
			case strings.HasPrefix(a, "transport error"):
				unknownWhy["transport error"]++
			default:
				status := strings.SplitN(a, " ", 2)[0]
				unknownWhy[status]++
				key := a + " on " + rec.meta.Instance
				span := spans[key]
				if span[2] == 0 || rec.call < span[0] {
					span[0] = rec.call
				}
				span[1], span[2] = max(span[1], rec.call), span[2]+1
				spans[key] = span
			}
			if rec.in.Kind == linIntrospectRefresh || rec.in.Kind == linIntrospectAccess {
				w.dropped["introspection without an answer"]++ // reads nothing and changes nothing
				continue
			}
			rec.ret = end // it may take effect at any time after it was sent
		}
		if _, ok := clients[sid]; !ok {
			clients[sid] = map[int]int{}
			order = append(order, sid)
		}
		cid, ok := clients[sid][rec.client]
		if !ok {
			cid = len(clients[sid])
			clients[sid][rec.client] = cid
		}
		histories[sid] = append(histories[sid], porcupine.Operation{
			ClientId: cid, Input: rec.in, Output: rec.out, Call: rec.call, Return: rec.ret, Metadata: rec.meta,
		})
		kinds[describeLinOpKindOutcome(rec.in, rec.out)]++
		total++
	}
	t.Logf("%d operations on %d sessions to check; by outcome: %v", total, len(order), kinds)
	t.Logf("unknown outcomes (taken as maybe applied, at any time later): %v; why: %v", unknown, unknownWhy)
	for what, span := range spans {
		t.Logf("%d answers %s, to operations sent from %.2fs to %.2fs", span[2], what, float64(span[0])/1e9, float64(span[1])/1e9)
	}
	t.Logf("left out of the histories: %v", w.dropped)
	t.Logf("how the clients saw sessions end: %v", w.ends)
	for _, calm := range []bool{false, true} {
		var lengths, gens []int
		for _, sid := range order {
			if w.calm[sid] != calm {
				continue
			}
			gen := 0
			for _, op := range histories[sid] {
				if out := op.Output.(linOutput); op.Input.(linInput).Kind == linRefresh && out.OK {
					gen = max(gen, int(out.Gen))
				}
			}
			lengths, gens = append(lengths, len(histories[sid])), append(gens, gen)
		}
		if len(lengths) > 0 {
			slices.Sort(lengths)
			slices.Sort(gens)
			t.Logf("%d sessions of %s slots: operations median %d, max %d; highest generation handed out median %d, max %d",
				len(lengths), map[bool]string{false: "hot", true: "calm"}[calm], lengths[len(lengths)/2], lengths[len(lengths)-1], gens[len(gens)/2], gens[len(gens)-1])
		}
	}

	checkStart := time.Now()
	verdicts := make([]linVerdict, len(order))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, sid := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			verdicts[i] = checkSessionHistory(histories[sid], linCheckTimeout)
		}()
	}
	wg.Wait()
	t.Logf("checked in %v", time.Since(checkStart).Round(time.Millisecond))

	if len(w.forks) > 0 {
		t.Errorf("%d forks: %v", len(w.forks), w.forks)
	}
	if len(w.odd) > 0 {
		t.Errorf("%d answers the API does not document (taken as unknown outcomes): %s", len(w.odd), strings.Join(w.odd[:min(len(w.odd), 10)], "; "))
	}
	var illegal, timedOut []string
	culprits := map[string]int{}
	var dir string
	for i, sid := range order {
		v := verdicts[i]
		switch v.Result {
		case porcupine.Unknown:
			timedOut = append(timedOut, sid)
		case porcupine.Illegal:
			illegal = append(illegal, sid)
			culprit := "none found"
			if v.Culprit != nil {
				culprit = describeLinOpKindOutcome(v.Culprit.Input.(linInput), v.Culprit.Output.(linOutput))
				if m, ok := v.Culprit.Metadata.(linMeta); ok {
					culprit += " on " + m.Instance
				}
			}
			culprits[culprit]++
			if dir == "" {
				var err error
				if dir, err = os.MkdirTemp("", "sessionledger-linearizability-"); err != nil {
					t.Fatal(err)
				}
			}
			path, err := writeLinVisualization(dir, sid, v, w.faults)
			if err != nil {
				t.Errorf("visualization of session %s: %v", sid, err)
			}
			if len(illegal) <= 5 {
				t.Errorf("session %s (%d operations) is not linearizable: %s\n\tvisualization: %s", sid, len(histories[sid]), v.Description, path)
			}
		}
	}
	if len(timedOut) > 0 {
		t.Errorf("the checker gave up on %d sessions after %v: %v", len(timedOut), linCheckTimeout, timedOut)
	}
	if len(illegal) > 0 {
		t.Errorf("%d of %d sessions are not linearizable (visualizations in %s); the operations that could not come next, by kind: %v", len(illegal), len(order), dir, culprits)
		// Are the writes alone linearizable? Then the introspections
		// were what no order explains: stale reads.
		var writesIllegal []string
		for _, sid := range illegal {
			writes := slices.DeleteFunc(slices.Clone(histories[sid]), func(op porcupine.Operation) bool {
				k := op.Input.(linInput).Kind
				return k == linIntrospectRefresh || k == linIntrospectAccess
			})
			if v := checkSessionHistory(writes, linCheckTimeout); v.Result != porcupine.Ok {
				writesIllegal = append(writesIllegal, sid)
				t.Errorf("session %s without its introspections: %v: %s", sid, v.Result, v.Description)
			}
		}
		t.Logf("without their introspections, %d of these %d sessions are linearizable", len(illegal)-len(writesIllegal), len(illegal))
		return
	}
	t.Logf("all %d sessions linearizable", len(order))
}

// logLinProblems logs how often each warning and error a ledger logged
// appears, with its first occurrence.
func logLinProblems(t *testing.T, name, logs string) {
	t.Helper()
	type problem struct {
		first string
		n     int
	}
	seen := map[string]*problem{}
	var order []string
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Level, Msg, Err string
		}
		if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
			continue
		}
		key := rec.Level + " " + rec.Msg
		if seen[key] == nil {
			seen[key] = &problem{first: line}
			order = append(order, key)
		}
		seen[key].n++
	}
	for _, key := range order {
		t.Logf("ledger %s logged %d× %s; first: %s", name, seen[key].n, key, seen[key].first)
	}
}

// describeLinOpKindOutcome names an operation's kind and outcome, for counts.
func describeLinOpKindOutcome(in linInput, out linOutput) string {
	res := describeLinOp(in, out)
	res = res[strings.Index(res, "→")+len("→ "):]
	if in.Kind == linRefresh && out.OK {
		res = "ok"
	}
	return in.Kind.String() + " " + res
}
