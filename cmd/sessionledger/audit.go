package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/sessionledger/sessionledger/audit"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
)

const auditUsage = `usage: sessionledger audit <command> [flags]

Reads the ledger's stream; needs nothing but read access to NATS.

commands:
  verify    check the whole stream: every event decodes, each user's digest chain
            is unbroken (nothing removed, reordered or altered), every session's
            history is a valid sequence of transitions; with --checkpoint-keys
            (the ledger's /.well-known/ledger-checkpoint-keys.json, saved), every
            signed checkpoint matches the stream, so a forged, dropped,
            reordered or edited event, or a stream rewritten from the start,
            is found; with --checkpoint (a file audit checkpoint wrote earlier),
            a truncated or rolled-back stream too
  checkpoint  print the newest checkpoint in the stream (JSON), to keep for a
            later verify --checkpoint
  history   a session's or a user's timeline (--session ID | --user ID | --user-key KEY)
  at        the state as of an instant (--time RFC3339 [--user ID])
  export    the stream, or a filter of it, as CloudEvents JSON lines

Common flags: --nats-url (default nats://127.0.0.1:4222), --nats-user,
--nats-password, --nats-token, --nats-creds, --nats-ca, --nats-cert, --nats-key
(each also as SESSIONLEDGER_<NAME>, e.g. SESSIONLEDGER_NATS_URL); --json where it applies.
verify exits with status 3 when it finds a problem.
`

// errIntegrity is returned by verify when it found problems (exit status 3).
var errIntegrity = errors.New("the stream failed verification")

// auditCmd holds what every audit subcommand shares.
type auditCmd struct {
	fs     *flag.FlagSet
	url    string
	auth   eventstore.Auth
	asJSON bool
	stdout io.Writer
	stderr io.Writer
	feed   *eventstore.Feed
	conn   *eventstore.Conn
}

func newAuditCmd(name string, stdout, stderr io.Writer) *auditCmd {
	a := &auditCmd{fs: flag.NewFlagSet("audit "+name, flag.ContinueOnError), stdout: stdout, stderr: stderr}
	a.fs.SetOutput(stderr)
	addNATSFlags(a.fs, &a.url, &a.auth, defaultNATSURL, "the ledger's NATS")
	a.fs.BoolVar(&a.asJSON, "json", false, "JSON lines instead of a table")
	return a
}

func (a *auditCmd) connect(ctx context.Context) error {
	conn, err := eventstore.Connect(a.url, a.auth, "sessionledger-audit")
	if err != nil {
		return err
	}
	if a.feed, err = conn.Feed(ctx); err != nil {
		conn.Close(ctx)
		return err
	}
	a.conn = conn
	return nil
}

func runAudit(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return errors.New("audit: no command given")
	}
	a := newAuditCmd(args[0], stdout, stderr)
	var run func(context.Context) error
	switch args[0] {
	case "verify":
		keys := a.fs.String("checkpoint-keys", "", "file with the ledger's checkpoint keys (JWK Set from /.well-known/ledger-checkpoint-keys.json)")
		trusted := a.fs.String("checkpoint", "", "file with a checkpoint kept from earlier (audit checkpoint)")
		run = func(ctx context.Context) error { return a.verify(ctx, *keys, *trusted) }
	case "checkpoint":
		keys := a.fs.String("checkpoint-keys", "", "verify it with these keys first (JWK Set file)")
		run = func(ctx context.Context) error { return a.checkpoint(ctx, *keys) }
	case "history":
		session := a.fs.String("session", "", "a session id")
		user := a.fs.String("user", "", "a user id (scans the whole stream)")
		userKey := a.fs.String("user-key", "", "a user key, as in subjects (reads only that user's subjects)")
		run = func(ctx context.Context) error { return a.history(ctx, *session, *user, *userKey) }
	case "at":
		at := a.fs.String("time", "", "the instant, RFC 3339 (required)")
		user := a.fs.String("user", "", "list this user's live sessions instead of counting all")
		run = func(ctx context.Context) error { return a.at(ctx, *at, *user) }
	case "export":
		session := a.fs.String("session", "", "only this session's events")
		userKey := a.fs.String("user-key", "", "only this user key's events")
		since := a.fs.String("since", "", "only events at or after this RFC 3339 time")
		until := a.fs.String("until", "", "only events before this RFC 3339 time")
		run = func(ctx context.Context) error { return a.export(ctx, *session, *userKey, *since, *until) }
	case "-h", "--help", "help":
		fmt.Fprint(stderr, auditUsage)
		return nil
	default:
		fmt.Fprint(stderr, auditUsage)
		return fmt.Errorf("audit: unknown command %q", args[0])
	}
	if err := parseFlags(a.fs, args[1:], lookupEnv); err != nil {
		return err
	}
	if a.fs.NArg() > 0 {
		return fmt.Errorf("audit %s takes no arguments, got %q", args[0], a.fs.Args())
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	defer a.conn.Close(context.Background())
	return run(ctx)
}

// replay feeds fn every stored message matching filters, with progress on
// stderr. Only verify looks at checkpoints; the other commands read events.
func (a *auditCmd) replay(ctx context.Context, filters []string, start time.Time, fn func(seq uint64, subject string, data []byte) error) error {
	p := newProgress(a.stderr)
	err := a.feed.Replay(ctx, filters, start, p.setTotal, func(seq uint64, subject string, data []byte) error {
		p.add()
		return fn(seq, subject, data)
	})
	p.finish()
	return err
}

// replayEvents is replay without the checkpoints: the messages that are
// meant to be events.
func (a *auditCmd) replayEvents(ctx context.Context, filters []string, start time.Time, fn func(seq uint64, subject string, data []byte) error) error {
	return a.replay(ctx, filters, start, func(seq uint64, subject string, data []byte) error {
		if subject == integrity.CheckpointSubject {
			return nil
		}
		return fn(seq, subject, data)
	})
}

func (a *auditCmd) verify(ctx context.Context, keysFile, trustedFile string) error {
	keys, trusted, err := readCheckpointFiles(keysFile, trustedFile)
	if err != nil {
		return err
	}
	// With keys, a first pass checks the checkpoints and learns which
	// messages the ledger refused, so that the second can keep them out of
	// the histories it checks.
	cps := audit.NewCheckpoints(keys, trusted)
	var refused func(uint64) (uint64, bool)
	if keys != nil {
		if err := a.replay(ctx, nil, time.Time{}, func(seq uint64, subject string, data []byte) error {
			cps.Scan(audit.Record{Seq: seq, Subject: subject, Data: data})
			return nil
		}); err != nil {
			return err
		}
		refused = cps.Refused
	}
	v := audit.NewVerifier(eventstore.SessionSubject, refused)
	err = a.replay(ctx, nil, time.Time{}, func(seq uint64, subject string, data []byte) error {
		r := audit.Record{Seq: seq, Subject: subject, Data: data}
		if keys == nil {
			cps.Scan(r)
		}
		v.Add(r)
		return nil
	})
	if err != nil {
		return err
	}
	problems := append(v.Problems(), cps.Finish()...)
	slices.SortStableFunc(problems, func(x, y audit.Problem) int { return cmp.Compare(x.Seq, y.Seq) })
	for _, p := range problems {
		if a.asJSON {
			b, _ := json.Marshal(p)
			fmt.Fprintf(a.stdout, "%s\n", b)
		} else {
			fmt.Fprintln(a.stdout, p)
		}
	}
	summary := cps.Summary()
	if len(problems) > 0 {
		fmt.Fprintf(a.stderr, "%d problems in %d events; %s\n", len(problems), v.Events(), summary)
		return fmt.Errorf("%w: %d problems", errIntegrity, len(problems))
	}
	if !a.asJSON {
		fmt.Fprintf(a.stdout, "ok: %d events of %d sessions; every event decodes and is where it was written (position, or the user's chain before expectations), every history is valid (%d writes superseded by an earlier user event); %s\n", v.Events(), v.Sessions(), v.Superseded(), summary)
	} else {
		fmt.Fprintf(a.stderr, "%s\n", summary)
	}
	return nil
}

// readCheckpointFiles reads the checkpoint keys and the kept checkpoint
// (either file name may be empty).
func readCheckpointFiles(keysFile, trustedFile string) (integrity.PublicKeys, *integrity.Checkpoint, error) {
	var keys integrity.PublicKeys
	if keysFile != "" {
		b, err := os.ReadFile(keysFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--checkpoint-keys: %w", err)
		}
		if keys, err = integrity.ParsePublicKeys(b); err != nil {
			return nil, nil, fmt.Errorf("--checkpoint-keys %s: %w", keysFile, err)
		}
	}
	if trustedFile == "" {
		return keys, nil, nil
	}
	if keys == nil {
		return nil, nil, errors.New("--checkpoint needs --checkpoint-keys to be checked")
	}
	b, err := os.ReadFile(trustedFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--checkpoint: %w", err)
	}
	c, err := integrity.DecodeCheckpoint(b)
	if err != nil {
		return nil, nil, fmt.Errorf("--checkpoint %s: %w", trustedFile, err)
	}
	return keys, &c, nil
}

// checkpoint prints the newest checkpoint in the stream, with the sequence
// it is stored at.
func (a *auditCmd) checkpoint(ctx context.Context, keysFile string) error {
	keys, _, err := readCheckpointFiles(keysFile, "")
	if err != nil {
		return err
	}
	seq, data, err := a.feed.LastCheckpoint(ctx)
	if err != nil {
		return err
	}
	c, err := integrity.DecodeCheckpoint(data)
	if err != nil {
		return fmt.Errorf("audit checkpoint: sequence %d: %w", seq, err)
	}
	if keys != nil {
		if err := keys.Verify(&c); err != nil {
			return fmt.Errorf("audit checkpoint: sequence %d: %w", seq, err)
		}
	}
	c.Seq = seq
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}

// timeline prints events as a table or as JSON lines.
type timeline struct {
	a  *auditCmd
	tw *tabwriter.Writer
}

func (a *auditCmd) newTimeline() *timeline {
	t := &timeline{a: a}
	if !a.asJSON {
		t.tw = tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(t.tw, "TIME\tSEQ\tEVENT\tSESSION\tDETAIL")
	}
	return t
}

func (t *timeline) add(e domain.Event, data []byte) {
	if t.tw == nil {
		fmt.Fprintf(t.a.stdout, "{\"seq\":%d,\"event\":%s}\n", e.Seq, data)
		return
	}
	session := e.SessionID
	if session == "" {
		session = "-"
	}
	fmt.Fprintf(t.tw, "%s\t%d\t%s\t%s\t%s\n", audit.FormatTime(e.Time), e.Seq, e.Type(), session, audit.Describe(e))
}

func (t *timeline) flush() {
	if t.tw != nil {
		t.tw.Flush()
	}
}

func decodeAt(seq uint64, data []byte) (domain.Event, error) {
	e, err := domain.DecodeEvent(data)
	if err != nil {
		return e, fmt.Errorf("seq %d: %w", seq, err)
	}
	e.Seq = seq
	return e, nil
}

func (a *auditCmd) history(ctx context.Context, session, user, userKey string) error {
	given := 0
	for _, v := range []string{session, user, userKey} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return errors.New("audit history: give exactly one of --session, --user, --user-key")
	}
	type row struct {
		e    domain.Event
		data []byte
	}
	var rows []row
	collect := func(keep func(domain.Event) bool) func(uint64, string, []byte) error {
		return func(seq uint64, _ string, data []byte) error {
			e, err := decodeAt(seq, data)
			if err != nil {
				return err
			}
			if keep(e) {
				rows = append(rows, row{e, append([]byte(nil), data...)})
			}
			return nil
		}
	}
	switch {
	case session != "":
		if !domain.ValidSessionID(session) {
			return fmt.Errorf("audit history: %q is not a session id", session)
		}
		// The session's history is its own events and the user event that
		// ended it, if one did: the rule the history endpoint follows too.
		data := map[uint64][]byte{}
		events := func(filter string, after uint64) ([]domain.Event, error) {
			rows = nil
			err := a.replayEvents(ctx, []string{filter}, time.Time{}, collect(func(e domain.Event) bool { return e.Seq > after }))
			var out []domain.Event
			for _, r := range rows {
				out, data[r.e.Seq] = append(out, r.e), r.data
			}
			return out, err
		}
		own, err := events(eventstore.SessionFilter(session), 0)
		if err != nil {
			return err
		}
		if len(own) == 0 {
			return fmt.Errorf("audit history: no events of session %s", session)
		}
		hist, err := domain.SessionHistory(own, func() ([]domain.Event, error) {
			return events(eventstore.UserEventsFilter(own[0].UserKey), own[0].Seq)
		})
		if err != nil {
			return err
		}
		rows = nil
		for _, e := range hist {
			rows = append(rows, row{e, data[e.Seq]})
		}
	case userKey != "":
		if err := a.replayEvents(ctx, []string{eventstore.UserFilter(userKey)}, time.Time{}, collect(func(domain.Event) bool { return true })); err != nil {
			return err
		}
	default: // a user id is not in subjects: find its user keys on the way
		keys := map[string]bool{}
		err := a.replayEvents(ctx, nil, time.Time{}, collect(func(e domain.Event) bool {
			if audit.UserID(e) == user {
				keys[e.UserKey] = true
			}
			return keys[e.UserKey]
		}))
		if err != nil {
			return err
		}
	}
	t := a.newTimeline()
	for _, r := range rows {
		t.add(r.e, r.data)
	}
	t.flush()
	return nil
}

func parseTime(flagName, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q is not an RFC 3339 time", flagName, v)
	}
	return t, nil
}

// errStop ends a replay early.
var errStop = errors.New("stop")

func (a *auditCmd) at(ctx context.Context, when, user string) error {
	if when == "" {
		return errors.New("audit at: --time is required")
	}
	at, err := parseTime("time", when)
	if err != nil {
		return err
	}
	asOf := audit.NewAsOf(at)
	err = a.replayEvents(ctx, nil, time.Time{}, func(seq uint64, _ string, data []byte) error {
		e, err := decodeAt(seq, data)
		if err != nil {
			return err
		}
		more, err := asOf.Add(e)
		if err == nil && !more {
			return errStop
		}
		return err
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	live, users := asOf.Live(user)
	issued := asOf.Issued()
	if a.asJSON {
		out := map[string]any{"time": at.UTC().Format(time.RFC3339Nano), "live_sessions": len(live), "users": users, "issued": issued}
		if user != "" {
			var ids []string
			for _, s := range live {
				ids = append(ids, s.ID)
			}
			out["sessions"] = ids
		}
		b, _ := json.Marshal(out)
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	if user == "" {
		fmt.Fprintf(a.stdout, "at %s: %d live sessions of %d users (%d issued by then)\n", at.UTC().Format(time.RFC3339), len(live), users, issued)
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SESSION\tISSUED\tLAST ACTIVE\tGENERATION\tDEVICE\n")
	for _, s := range live {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.ID, audit.FormatTime(s.IssuedAt.Time()), audit.FormatTime(s.LastActive.Time()), s.Generation, s.Device.Name)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "at %s: user %s had %d live sessions\n", at.UTC().Format(time.RFC3339), user, len(live))
	return nil
}

func (a *auditCmd) export(ctx context.Context, session, userKey, since, until string) error {
	var filters []string
	switch {
	case session != "" && userKey != "":
		return errors.New("audit export: give --session or --user-key, not both")
	case session != "":
		if !domain.ValidSessionID(session) {
			return fmt.Errorf("audit export: %q is not a session id", session)
		}
		filters = []string{eventstore.SessionFilter(session)}
	case userKey != "":
		filters = []string{eventstore.UserFilter(userKey)}
	}
	var from, to time.Time
	var err error
	if since != "" {
		if from, err = parseTime("since", since); err != nil {
			return err
		}
	}
	if until != "" {
		if to, err = parseTime("until", until); err != nil {
			return err
		}
	}
	start := time.Time{}
	if !from.IsZero() {
		start = from.Add(-audit.Skew)
	}
	err = a.replayEvents(ctx, filters, start, func(seq uint64, _ string, data []byte) error {
		e, err := decodeAt(seq, data)
		if err != nil {
			return err
		}
		switch {
		case !to.IsZero() && e.Time.After(to.Add(audit.Skew)):
			return errStop
		case !from.IsZero() && e.Time.Before(from), !to.IsZero() && !e.Time.Before(to):
			return nil
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", data)
		return err
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// progress shows replay progress: a bar on a terminal, plain lines otherwise,
// and the replay rate at the end.
type progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	total uint64
	n     uint64
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now(), last: time.Now()} }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *progress) setTotal(n uint64) {
	p.total = n
	if isTerminal(p.w) && n > 0 {
		p.bar = progressbar.NewOptions64(int64(n), progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription("replaying"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
}

func (p *progress) add() {
	p.n++
	if p.bar != nil {
		_ = p.bar.Add64(1)
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 2*time.Second {
		p.last = now
		fmt.Fprintf(p.w, "replayed %d of %d events\n", p.n, p.total)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
	d := time.Since(p.start)
	fmt.Fprintf(p.w, "replayed %d events in %v (%.0f events/s)\n", p.n, d.Round(time.Millisecond), float64(p.n)/max(d.Seconds(), 1e-9))
}
