package keyring

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// DefaultPropagation is how long after its creation a new refresh-token,
// tag or checkpoint key takes over, so that every instance has read it from
// the bucket before any token, event or checkpoint uses it.
const DefaultPropagation = 10 * time.Second

// Config is the rotation policy.
type Config struct {
	// SigningAlg is the algorithm of new signing keys. When the newest
	// signing key has another, a key of this one is made at start.
	SigningAlg string
	// Rotation is how long each signing key signs before the next takes
	// over; 0 rotates only when asked (Manager.Rotate).
	Rotation time.Duration
	// Prepublish is how long a new signing key is in the JWKS before it
	// signs; at least the JWKS cache lifetime served (JWKSMaxAge).
	Prepublish time.Duration
	// RetireAfter is how long a signing key stays in the JWKS after it
	// last signed: the longest access-token lifetime plus leeway.
	RetireAfter time.Duration
	// Propagation is how long a new key of another kind waits before it
	// takes over (DefaultPropagation when 0).
	Propagation time.Duration
	// NeverSigned reports whether the ledger has never issued a token (its
	// stream is empty): then a key of a newly chosen algorithm signs at
	// once (no token can be waiting for it). The key it replaces stays in
	// the JWKS as any retired key does, for an instance that signed with it
	// before it read the new one.
	NeverSigned func(ctx context.Context) (bool, error)
	Now         func() time.Time
	Logger      *slog.Logger
}

// JWKSMaxAge is the Cache-Control max-age to serve the JWKS with: a third
// of the pre-publication time, at most five minutes, at least a second. A
// new key is then in the JWKS three max-ages before it signs: one for a
// shared HTTP cache between the ledger and a verifier, one for the
// verifier's own copy, and one for the clocks of the ledger's instances
// and the lag of their key watch.
func JWKSMaxAge(prepublish time.Duration) time.Duration {
	return max(min(prepublish/3, 5*time.Minute), time.Second).Truncate(time.Second)
}

// Targets receive the keys in force whenever they change.
type Targets struct {
	Signing    func(active *accesstoken.Key, published []*accesstoken.Key) error
	Token      func(domain.TokenKeys)
	Tag        func(current string, keys map[string][]byte) error
	Checkpoint func(current integrity.CheckpointKey, public integrity.PublicKeys)
	// SET gets the key that signs Security Event Tokens and every SET key
	// (all stay published: a polled SET may be read long after it was
	// signed).
	SET func(active *accesstoken.Key, published []*accesstoken.Key) error
}

// Manager applies a ring's schedule: it hands the keys in force to their
// users when a key takes over or retires, and makes the next signing key
// when the rotation interval asks for one.
type Manager struct {
	ring *Ring
	cfg  Config
	t    Targets
	log  *slog.Logger

	mu     sync.Mutex
	parsed map[string]*accesstoken.Key // signing keys by record name

	applyMu sync.Mutex // one apply at a time

	syncMu   sync.Mutex
	lastLoad time.Time // when the last successful read of the bucket by Resolve began

	done chan struct{} // closed when the schedule loop has stopped
}

// Done is closed once the schedule started by Start has stopped (its ctx
// ended).
func (m *Manager) Done() <-chan struct{} { return m.done }

// Apply hands the keys in force now to the targets again (for a target
// that was not ready before).
func (m *Manager) Apply() error {
	_, err := m.apply()
	return err
}

// Resolve is for a user that met a key id of kind it does not hold (a tag
// on an event, a session's recorded digest): a record another instance
// already uses that the watch has not delivered yet. It reads the bucket,
// trying again with backoff until a read succeeds or ctx ends (a read
// failing must not make a genuine event look forged), hands out what it
// found, and reports whether the key is held now. A read that began after
// the call, made by another caller, counts as its own.
func (m *Manager) Resolve(ctx context.Context, kind, id string) bool {
	if m.holds(kind, id) {
		return true
	}
	asked := time.Now()
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	if m.lastLoad.After(asked) {
		return m.holds(kind, id)
	}
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		start := time.Now()
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := m.ring.Load(lctx)
		cancel()
		if err == nil {
			m.lastLoad = start
			break
		}
		m.log.Warn("keyring: reading the key bucket failed; trying again", "kind", kind, "id", id, "err", err)
		select {
		case <-ctx.Done():
			return m.holds(kind, id)
		case <-time.After(backoff):
		}
	}
	if _, err := m.apply(); err != nil {
		m.log.Error("keyring: keys not applied", "err", err)
	}
	return m.holds(kind, id)
}

func (m *Manager) holds(kind, id string) bool {
	recs, _ := m.ring.Records(kind)
	return slices.ContainsFunc(recs, func(r Record) bool { return r.ID == id })
}

// NewManager returns a manager of ring's keys.
func NewManager(ring *Ring, cfg Config, t Targets) (*Manager, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Propagation <= 0 {
		cfg.Propagation = DefaultPropagation
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !slices.Contains(accesstoken.Algorithms, cfg.SigningAlg) {
		return nil, fmt.Errorf("keyring: signing algorithm %q is not one of %v", cfg.SigningAlg, accesstoken.Algorithms)
	}
	if cfg.Prepublish < time.Second {
		return nil, errors.New("keyring: the pre-publication time must be at least a second")
	}
	if cfg.Rotation < 0 || (cfg.Rotation > 0 && cfg.Rotation <= cfg.Prepublish) {
		return nil, errors.New("keyring: the rotation interval must be 0 (manual) or longer than the pre-publication time")
	}
	return &Manager{ring: ring, cfg: cfg, t: t, log: cfg.Logger, parsed: map[string]*accesstoken.Key{}, done: make(chan struct{})}, nil
}

// Start makes a signing key of the configured algorithm if the newest has
// another, hands every kind's keys to the targets, and keeps doing so, in
// the background, until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.ensureAlgorithm(ctx); err != nil {
		return err
	}
	if err := m.ensureSET(ctx); err != nil {
		return err
	}
	if _, err := m.apply(); err != nil {
		return err
	}
	go m.loop(ctx)
	return nil
}

func (m *Manager) ensureAlgorithm(ctx context.Context) error {
	recs, _ := m.ring.Records(Signing)
	if recs[len(recs)-1].Alg == m.cfg.SigningAlg {
		return nil
	}
	now := m.cfg.Now()
	never := false
	if m.cfg.NeverSigned != nil {
		var err error
		if never, err = m.cfg.NeverSigned(ctx); err != nil {
			return err
		}
	}
	activate := now.Add(m.cfg.Prepublish)
	if never {
		activate = now // no token was issued: none can be waiting for the key
	}
	rec, created, err := m.ring.Rotate(ctx, Signing, m.cfg.SigningAlg, now, activate, m.cfg.RetireAfter)
	if err != nil {
		return err
	}
	if created {
		m.log.Info("signing key made for a new algorithm", "kid", rec.ID, "alg", rec.Alg, "signs_from", rec.ActivateAt)
	}
	return nil
}

// ensureSET makes the first SET key when there is none, active at once:
// no SET was signed before it, so no receiver can be waiting for it.
func (m *Manager) ensureSET(ctx context.Context) error {
	if recs, _ := m.ring.Records(SET); len(recs) > 0 {
		return nil
	}
	now := m.cfg.Now()
	rec, created, err := m.ring.Rotate(ctx, SET, SETAlg, now, now, 0)
	if err != nil {
		return err
	}
	if created {
		m.log.Info("SET signing key made", "kid", rec.ID, "alg", rec.Alg)
	}
	return nil
}

func (m *Manager) loop(ctx context.Context) {
	defer close(m.done)
	// rotating is closed when the scheduled rotation under way (made in
	// the background: an RSA key takes seconds to make, and meanwhile the
	// keys in force must still be applied when they change) is over; nil
	// when none is.
	var rotating chan struct{}
	defer func() {
		if rotating != nil {
			<-rotating
		}
	}()
	for {
		// The channel is taken before the records are read: a record that
		// arrives while they are applied wakes the next round.
		_, changed := m.ring.Records(Signing)
		now := m.cfg.Now()
		next, err := m.apply()
		if err != nil {
			m.log.Error("keyring: keys not applied", "err", err)
		}
		if due, ok := m.rotationDue(); ok && rotating == nil {
			if !due.After(now) {
				rotating = make(chan struct{})
				go func(done chan struct{}) {
					defer close(done)
					m.scheduledRotation(ctx, now)
				}(rotating)
				continue
			}
			if next.IsZero() || due.Before(next) {
				next = due
			}
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(next.Sub(now))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-timer:
		case <-rotating: // nil (never ready) when no rotation is under way
			rotating = nil
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// rotationDue returns when the next signing key must be made: a
// pre-publication time before the newest key has signed for an interval.
func (m *Manager) rotationDue() (time.Time, bool) {
	if m.cfg.Rotation == 0 {
		return time.Time{}, false
	}
	recs, _ := m.ring.Records(Signing)
	latest := recs[len(recs)-1]
	return latest.ActivateAt.Add(m.cfg.Rotation - m.cfg.Prepublish), true
}

func (m *Manager) scheduledRotation(ctx context.Context, now time.Time) {
	recs, _ := m.ring.Records(Signing)
	latest := recs[len(recs)-1]
	activate := latest.ActivateAt.Add(m.cfg.Rotation)
	if earliest := now.Add(m.cfg.Prepublish); activate.Before(earliest) {
		activate = earliest
	}
	rec, created, err := m.ring.Rotate(ctx, Signing, m.cfg.SigningAlg, now, activate, m.cfg.RetireAfter)
	switch {
	case err != nil:
		m.log.Error("keyring: scheduled signing-key rotation failed; trying again in a second", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	case created:
		m.log.Info("signing key rotated on schedule", "kid", rec.ID, "alg", rec.Alg, "signs_from", rec.ActivateAt)
	}
}

// Rotate makes the next key of kind now, as an operator asks: a signing key
// signs after the pre-publication time, another kind takes over after the
// propagation time.
func (m *Manager) Rotate(ctx context.Context, kind string) (Record, error) {
	if !slices.Contains(Kinds, kind) {
		return Record{}, fmt.Errorf("%w: the kinds of keys are %v", ErrUnknownKind, Kinds)
	}
	now := m.cfg.Now()
	wait := m.cfg.Propagation
	if kind == Signing || kind == SET {
		wait = m.cfg.Prepublish // receivers cache the JWKS
	}
	rec, created, err := m.ring.Rotate(ctx, kind, m.cfg.SigningAlg, now, now.Add(wait), m.cfg.RetireAfter)
	if err != nil {
		return Record{}, err
	}
	if !created {
		return Record{}, ErrRotationRace
	}
	m.log.Info("key rotated on request", "kind", kind, "id", rec.ID, "alg", rec.Alg, "active_from", rec.ActivateAt)
	return rec, nil
}

// Errors of Rotate.
var (
	ErrUnknownKind  = errors.New("keyring: no such kind of key")
	ErrRotationRace = errors.New("keyring: another rotation of this kind was made at the same moment; list the keys and try again if needed")
)

// apply hands the keys in force at now to the targets, and returns the next
// instant at which they change (zero if none is scheduled). Calls take
// turns, each reading the records and the clock inside its turn, so that an
// older set is never handed out after a newer one.
func (m *Manager) apply() (next time.Time, err error) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	now := m.cfg.Now()
	soonest := func(t time.Time) {
		if !t.IsZero() && t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	signing, _ := m.ring.Records(Signing)
	published, n := Published(signing, m.cfg.RetireAfter, now)
	soonest(n)
	active := Active(signing, now)
	var keys []*accesstoken.Key
	var activeKey *accesstoken.Key
	for _, r := range published {
		k, err := m.signingKey(r)
		if err != nil {
			return next, err
		}
		keys = append(keys, k)
		if r.Gen == active.Gen {
			activeKey = k
		}
	}
	if m.t.Signing != nil {
		if err := m.t.Signing(activeKey, keys); err != nil {
			return next, err
		}
	}

	token, _ := m.ring.Records(Token)
	soonest(NextActivation(token, now))
	if m.t.Token != nil {
		cur := Active(token, now)
		tk := domain.TokenKeys{LegacyKeyID: token[0].ID}
		for i := len(token) - 1; i >= 0; i-- {
			r := token[i]
			d, s, err := decodeTokenKeys(r.Secret)
			if err != nil {
				return next, err
			}
			if r.Gen == cur.Gen {
				tk.DigestKeyID, tk.DigestKey, tk.SuccessorKey = r.ID, d, s
			} else {
				tk.Older = append(tk.Older, domain.TokenKey{ID: r.ID, DigestKey: d, SuccessorKey: s})
			}
		}
		m.t.Token(tk)
	}

	tag, _ := m.ring.Records(Tag)
	soonest(NextActivation(tag, now))
	if m.t.Tag != nil {
		keys := map[string][]byte{}
		for _, r := range tag {
			keys[r.ID] = r.Secret
		}
		if err := m.t.Tag(Active(tag, now).ID, keys); err != nil {
			return next, err
		}
	}

	cp, _ := m.ring.Records(Checkpoint)
	soonest(NextActivation(cp, now))
	if m.t.Checkpoint != nil {
		public := integrity.PublicKeys{}
		for _, r := range cp {
			public[r.ID] = ed25519.NewKeyFromSeed(r.Secret).Public().(ed25519.PublicKey)
		}
		cur := Active(cp, now)
		m.t.Checkpoint(integrity.CheckpointKey{ID: cur.ID, Private: ed25519.NewKeyFromSeed(cur.Secret)}, public)
	}

	set, _ := m.ring.Records(SET)
	soonest(NextActivation(set, now))
	if m.t.SET != nil && len(set) > 0 {
		cur := Active(set, now)
		var active *accesstoken.Key
		keys := make([]*accesstoken.Key, 0, len(set))
		for _, r := range set {
			k, err := m.signingKey(r)
			if err != nil {
				return next, err
			}
			keys = append(keys, k)
			if r.Gen == cur.Gen {
				active = k
			}
		}
		if err := m.t.SET(active, keys); err != nil {
			return next, err
		}
	}
	return next, nil
}

func (m *Manager) signingKey(r Record) (*accesstoken.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.parsed[r.Name()]; ok {
		return k, nil
	}
	k, err := accesstoken.ParsePrivateKey(r.Secret)
	if err != nil {
		return nil, fmt.Errorf("keyring: %s: %w", r.Name(), err)
	}
	m.parsed[r.Name()] = k
	return k, nil
}

// Status is what an operator is shown of one key: never its secret.
type Status struct {
	Kind       string    `json:"kind"`
	Generation uint32    `json:"generation"`
	ID         string    `json:"id"`
	Alg        string    `json:"alg,omitempty"`
	State      string    `json:"state"` // pending, active, retiring (signing: in the JWKS, no longer signing), retired, previous
	Created    time.Time `json:"created,omitzero"`
	ActiveFrom time.Time `json:"active_from,omitzero"`
	// ActiveUntil is when the next generation took or takes over.
	ActiveUntil time.Time `json:"active_until,omitzero"`
	// PublishedUntil is when a signing key leaves (or left) the JWKS.
	PublishedUntil time.Time `json:"published_until,omitzero"`
}

// Status lists every generation of every kind, oldest first.
func (m *Manager) Status() []Status {
	now := m.cfg.Now()
	var out []Status
	for _, kind := range Kinds {
		recs, _ := m.ring.Records(kind)
		if len(recs) == 0 {
			continue // no SET key yet
		}
		active := Active(recs, now)
		windows := SigningWindows(recs, m.cfg.RetireAfter)
		for i, r := range recs {
			s := Status{Kind: kind, Generation: r.Gen, ID: r.ID, Alg: r.Alg, Created: r.Created, ActiveFrom: r.ActivateAt, ActiveUntil: windows[i].SignsUntil}
			switch {
			case r.ActivateAt.After(now):
				s.State = "pending"
			case r.Gen == active.Gen:
				s.State = "active"
			case kind != Signing:
				s.State = "previous" // still accepted: tokens, events, checkpoints and SETs made under it
			case now.Before(windows[i].RetireAt):
				s.State = "retiring"
			default:
				s.State = "retired"
			}
			if kind == Signing {
				s.PublishedUntil = windows[i].RetireAt
			}
			out = append(out, s)
		}
	}
	return out
}
