package transmit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
)

// Poll limits.
const (
	DefaultMaxEvents = 100
	MaxMaxEvents     = 256
	maxAcks          = 1024
	// MaxLongPoll bounds how long a poll waits for an event.
	MaxLongPoll = 25 * time.Second
)

// PollRequest is an RFC 8936 §2.4 poll request.
type PollRequest struct {
	MaxEvents         *int                `json:"maxEvents,omitempty"`
	ReturnImmediately bool                `json:"returnImmediately,omitempty"`
	Ack               []string            `json:"ack,omitempty"`
	SetErrs           map[string]SETError `json:"setErrs,omitempty"`
}

// SETError is a receiver's report on one SET it could not accept.
type SETError struct {
	Err         string `json:"err"`
	Description string `json:"description"`
}

// PollResponse is an RFC 8936 §2.5 poll response.
type PollResponse struct {
	Sets          map[string]string `json:"sets"`
	MoreAvailable bool              `json:"moreAvailable,omitempty"`
}

// pollState is where a polled stream stands: every SET of the events up
// to Cursor is acknowledged; Acked holds the acknowledged jtis of later
// events (acknowledged out of order); Queued holds SETs not made of events
// (verification), by jti.
type pollState struct {
	Cursor uint64            `json:"cursor"`
	Acked  []string          `json:"acked,omitempty"`
	Queued map[string]string `json:"queued,omitempty"`
}

func pollKey(id string) string { return pollPrefix + id }

// loadPoll returns the poll state of ep and its revision (0: none yet).
func (t *Transmitter) loadPoll(ctx context.Context, ep *Endpoint) (pollState, uint64, error) {
	b, rev, err := t.reg.bucket.Get(ctx, pollKey(ep.ID))
	if errors.Is(err, eventstore.ErrNotFound) {
		return pollState{Cursor: ep.StartSeq - 1}, 0, nil
	}
	if err != nil {
		return pollState{}, 0, err
	}
	var st pollState
	if err := json.Unmarshal(b, &st); err != nil {
		return pollState{}, 0, fmt.Errorf("transmit: poll state of %s: %w", ep.ID, err)
	}
	return st, rev, nil
}

// savePoll stores st if nobody changed it since rev (eventstore.ErrChanged
// otherwise).
func (t *Transmitter) savePoll(ctx context.Context, ep *Endpoint, st pollState, rev uint64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = t.reg.bucket.Create(ctx, pollKey(ep.ID), b)
		if errors.Is(err, eventstore.ErrExists) {
			return eventstore.ErrChanged
		}
		return err
	}
	_, err = t.reg.bucket.Update(ctx, pollKey(ep.ID), b, rev)
	return err
}

// changePoll applies change to ep's poll state, again if another poll came
// first.
func (t *Transmitter) changePoll(ctx context.Context, ep *Endpoint, change func(*pollState) error) error {
	for {
		st, rev, err := t.loadPoll(ctx, ep)
		if err != nil {
			return err
		}
		if err := change(&st); err != nil {
			return err
		}
		err = t.savePoll(ctx, ep, st, rev)
		if !errors.Is(err, eventstore.ErrChanged) {
			return err
		}
	}
}

// queuePolled adds a SET not made of an event to ep's next poll.
func (t *Transmitter) queuePolled(ctx context.Context, ep *Endpoint, jti, set string) error {
	return t.changePoll(ctx, ep, func(st *pollState) error {
		if len(st.Queued) >= 16 {
			return fmt.Errorf("%w: 16 verification events wait for a poll", ErrTooSoon)
		}
		if st.Queued == nil {
			st.Queued = map[string]string{}
		}
		st.Queued[jti] = set
		return nil
	})
}

// skipPolled moves ep's poll cursor to last (the end of the stream when
// the stream was disabled).
func (t *Transmitter) skipPolled(ctx context.Context, ep *Endpoint, last uint64) error {
	return t.changePoll(ctx, ep, func(st *pollState) error {
		st.Cursor, st.Acked = max(st.Cursor, last), nil
		return nil
	})
}

// polled is one SET a poll may return, of the event at seq.
type polled struct {
	seq uint64
	jti string
	sig signal
}

// Poll answers an RFC 8936 poll of the stream id: it records the
// acknowledgements and errors, then returns the SETs not yet acknowledged,
// in stream order, waiting for one (long poll) until deadline unless asked
// to return at once. A paused or disabled stream returns none.
func (t *Transmitter) Poll(ctx context.Context, c Caller, id string, req PollRequest, deadline time.Time) (PollResponse, error) {
	ep, err := t.stream(ctx, c, id)
	if err != nil {
		return PollResponse{}, err
	}
	if ep.Stream.Method != DeliveryPoll {
		return PollResponse{}, invalid("the stream is delivered by push, not poll")
	}
	limit := DefaultMaxEvents
	if req.MaxEvents != nil {
		if *req.MaxEvents < 0 || *req.MaxEvents > MaxMaxEvents {
			return PollResponse{}, invalid("maxEvents must be 0 to %d", MaxMaxEvents)
		}
		limit = *req.MaxEvents
	}
	if len(req.Ack)+len(req.SetErrs) > maxAcks {
		return PollResponse{}, invalid("at most %d acknowledgements and errors in one poll", maxAcks)
	}
	acks := slices.Clone(req.Ack)
	for jti := range req.SetErrs {
		acks = append(acks, jti) // the receiver has the SET; it will not take it again
	}
	for _, a := range acks {
		if len(a) > 128 {
			return PollResponse{}, invalid("ack entries are jti values")
		}
	}
	if len(req.SetErrs) > 0 {
		codes := map[string]int{}
		for _, e := range req.SetErrs {
			if len(e.Err) <= 32 {
				codes[e.Err]++
			}
		}
		t.log.Info("transmit: a receiver reported SET errors", "endpoint", ep.ID, "count", len(req.SetErrs), "codes", codes)
	}
	if len(acks) > 0 {
		if err := t.changePoll(ctx, ep, func(st *pollState) error { return t.acknowledge(ctx, ep, st, acks) }); err != nil {
			return PollResponse{}, err
		}
	}
	resp := PollResponse{Sets: map[string]string{}}
	if limit == 0 || ep.Status != StatusEnabled {
		return resp, nil
	}
	wait := time.Duration(0)
	if !req.ReturnImmediately {
		wait = min(time.Until(deadline)-time.Second, MaxLongPoll)
	}
	st, _, err := t.loadPoll(ctx, ep)
	if err != nil {
		return PollResponse{}, err
	}
	for _, jti := range slices.Sorted(maps.Keys(st.Queued)) {
		if len(resp.Sets) == limit {
			resp.MoreAvailable = true
			return resp, nil
		}
		resp.Sets[jti] = st.Queued[jti]
	}
	if len(resp.Sets) > 0 {
		wait = 0
	}
	pending, more, err := t.unacknowledged(ctx, ep, st, limit-len(resp.Sets), wait)
	if err != nil {
		return PollResponse{}, err
	}
	for _, p := range pending {
		set, err := t.signSignal(p.sig, ep.Stream.Audience, t.now())
		if err != nil {
			return PollResponse{}, err
		}
		resp.Sets[p.jti] = set
	}
	resp.MoreAvailable = more
	return resp, nil
}

// acknowledge records acks in st and moves its cursor over every event
// whose SETs are all acknowledged.
func (t *Transmitter) acknowledge(ctx context.Context, ep *Endpoint, st *pollState, acks []string) error {
	for _, a := range acks {
		if _, ok := st.Queued[a]; ok {
			delete(st.Queued, a)
			continue
		}
		if validJTI(a) && !slices.Contains(st.Acked, a) {
			st.Acked = append(st.Acked, a)
		}
	}
	// Read as far as the acknowledgements may reach.
	for reads := 0; len(st.Acked) > 0 && reads < 8; reads++ {
		sets, through, _, err := t.setsAfter(ctx, ep, st.Cursor, len(st.Acked)+1, 0)
		if err != nil {
			return err
		}
		moved := false
		i := 0
		for i < len(sets) {
			seq := sets[i].seq
			j := i
			all := true
			for ; j < len(sets) && sets[j].seq == seq; j++ {
				all = all && slices.Contains(st.Acked, sets[j].jti)
			}
			if !all {
				break
			}
			for k := i; k < j; k++ {
				st.Acked = slices.DeleteFunc(st.Acked, func(a string) bool { return a == sets[k].jti })
			}
			st.Cursor, moved = seq, true
			i = j
		}
		if i == len(sets) && through > st.Cursor {
			st.Cursor, moved = through, true // every SET read is acknowledged: past the records that made none
		}
		if !moved {
			break
		}
	}
	// Acknowledgements of nothing the stream holds (unknown or already
	// acknowledged jtis) are not kept past a bound.
	if len(st.Acked) > maxAcks {
		st.Acked = st.Acked[len(st.Acked)-maxAcks:]
	}
	return nil
}

// unacknowledged returns up to limit SETs after st's cursor not yet
// acknowledged, and whether more wait. When it found none, it moves the
// cursor over what it read (records that make no SET for this stream, or
// whose SETs are all acknowledged), so that the next poll neither reads
// them again nor stops at its read bound before a SET the stream wants.
func (t *Transmitter) unacknowledged(ctx context.Context, ep *Endpoint, st pollState, limit int, wait time.Duration) ([]polled, bool, error) {
	if limit <= 0 {
		return nil, true, nil
	}
	sets, through, capped, err := t.setsAfter(ctx, ep, st.Cursor, limit+len(st.Acked)+1, wait)
	if err != nil {
		return nil, false, err
	}
	var out []polled
	for _, p := range sets {
		if slices.Contains(st.Acked, p.jti) {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, p)
	}
	if len(out) == 0 && through > st.Cursor {
		from := st.Cursor
		err := t.changePoll(ctx, ep, func(cur *pollState) error {
			if cur.Cursor == from {
				cur.Cursor = through
				cur.Acked = slices.DeleteFunc(cur.Acked, func(a string) bool {
					return slices.ContainsFunc(sets, func(p polled) bool { return p.jti == a })
				})
			}
			return nil
		})
		if err != nil {
			return nil, false, err
		}
	}
	return out, capped, nil
}

// setsAfter returns the SETs of ep made of the events after seq (records
// that make none are passed over): at least n of them if there are, in
// whole events, reading at most 16 chunks of records. through is the
// sequence of the last record read (seq if none), capped whether the read
// stopped at its bound with records left. When there are none, it waits up
// to wait for one.
func (t *Transmitter) setsAfter(ctx context.Context, ep *Endpoint, seq uint64, n int, wait time.Duration) (out []polled, through uint64, capped bool, err error) {
	const chunk = MaxMaxEvents
	through = seq
	for reads := 0; len(out) < n; reads++ {
		if reads == 16 {
			return out, through, true, nil
		}
		recs, err := t.store.ReadRecords(ctx, eventstore.TypeSubjects(ep.Types), through, chunk, wait)
		if err != nil {
			return nil, 0, false, err
		}
		for _, r := range recs {
			through = r.Seq
			if r.Kind != domain.RecordEvent {
				continue
			}
			userID, err := t.users.of(ctx, r.Event)
			if err != nil {
				return nil, 0, false, err
			}
			for _, sig := range signals(t.issuer, r.Event, userID, ep.Stream.EventsDelivered) {
				out = append(out, polled{seq: r.Seq, jti: sig.jti, sig: sig})
			}
		}
		if len(recs) < chunk {
			break
		}
		wait = 0
	}
	return out, through, false, nil
}

// validJTI reports whether a is shaped like a jti of this transmitter.
func validJTI(a string) bool {
	id, _, ok := strings.Cut(a, ".")
	return ok && validID(id)
}
