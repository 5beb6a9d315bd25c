package transmit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// Delivery methods (SSF 1.0 §7.1.1).
const (
	DeliveryPush = "urn:ietf:rfc:8935"
	DeliveryPoll = "urn:ietf:rfc:8936"
)

// Scopes of receiver tokens, as the CAEP Interoperability Profile names them.
const (
	ScopeManage = "ssf.manage"
	ScopeRead   = "ssf.read"
)

// SpecVersion is the spec_version of the transmitter metadata.
const SpecVersion = "1_0"

// Paths of the SSF endpoints under the issuer.
const (
	ConfigurationPath = "/ssf/streams"
	StatusPath        = "/ssf/status"
	VerificationPath  = "/ssf/verify"
	PollPath          = "/ssf/poll/" // + stream id
	SETKeysPath       = "/.well-known/ssf-jwks.json"
	MetadataPath      = "/.well-known/ssf-configuration"
)

// Metadata returns the transmitter configuration metadata (SSF 1.0 §6.1).
func (t *Transmitter) Metadata() map[string]any {
	return map[string]any{
		"spec_version":               SpecVersion,
		"issuer":                     t.issuer,
		"jwks_uri":                   t.issuer + SETKeysPath,
		"delivery_methods_supported": []string{DeliveryPush, DeliveryPoll},
		"configuration_endpoint":     t.issuer + ConfigurationPath,
		"status_endpoint":            t.issuer + StatusPath,
		"verification_endpoint":      t.issuer + VerificationPath,
		"authorization_schemes":      []map[string]string{{"spec_urn": "urn:ietf:rfc:6749"}, {"spec_urn": "urn:ietf:rfc:6750"}},
		"default_subjects":           "ALL",
	}
}

// Caller is who asks: the admin (every stream) or a receiver (its own).
type Caller struct {
	Admin    bool
	Receiver *Receiver
}

func (c Caller) owner() string {
	if c.Receiver != nil {
		return c.Receiver.ID
	}
	return ""
}

// may reports whether c may see and change ep.
func (c Caller) may(ep *Endpoint) bool {
	if ep.Kind != KindStream {
		return false
	}
	return c.Admin || (c.Receiver != nil && ep.Stream.Receiver == c.Receiver.ID)
}

// StreamDelivery is a stream's delivery object.
type StreamDelivery struct {
	Method              string `json:"method"`
	EndpointURL         string `json:"endpoint_url,omitempty"`
	AuthorizationHeader string `json:"authorization_header,omitempty"` // receiver-supplied; never shown back
}

// StreamRequest is what a receiver sends to create, update or replace a
// stream. The transmitter-supplied members are ignored, but aud, which an
// admin (not a receiver) may set.
type StreamRequest struct {
	StreamID        string          `json:"stream_id,omitempty"`
	Aud             json.RawMessage `json:"aud,omitempty"`
	EventsRequested *[]string       `json:"events_requested,omitempty"`
	Delivery        *StreamDelivery `json:"delivery,omitempty"`
	Description     *string         `json:"description,omitempty"`
}

// Stream is a stream's configuration as SSF 1.0 §7.1.1 shows it.
type Stream struct {
	StreamID                string         `json:"stream_id"`
	Iss                     string         `json:"iss"`
	Aud                     any            `json:"aud"`
	EventsSupported         []string       `json:"events_supported"`
	EventsRequested         []string       `json:"events_requested"`
	EventsDelivered         []string       `json:"events_delivered"`
	Delivery                StreamDelivery `json:"delivery"`
	MinVerificationInterval int            `json:"min_verification_interval"`
	Description             string         `json:"description,omitempty"`
}

func (t *Transmitter) view(ep *Endpoint) Stream {
	d := StreamDelivery{Method: ep.Stream.Method, EndpointURL: ep.URL}
	if ep.Stream.Method == DeliveryPoll {
		d.EndpointURL = t.issuer + PollPath + ep.ID
	}
	return Stream{
		StreamID: ep.ID, Iss: t.issuer, Aud: audience(ep.Stream.Audience),
		EventsSupported: CAEPEvents, EventsRequested: ep.Stream.EventsRequested,
		EventsDelivered: ep.Stream.EventsDelivered, Delivery: d,
		MinVerificationInterval: MinVerificationInterval, Description: ep.Stream.Description,
	}
}

// parseAudience reads aud: a string or an array of strings.
func parseAudience(raw json.RawMessage) ([]string, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" || len(one) > 512 {
			return nil, invalid("aud must be a non-empty string of at most 512 characters, or an array of them")
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil || len(many) == 0 || len(many) > 8 {
		return nil, invalid("aud must be a non-empty string, or an array of 1 to 8 of them")
	}
	for _, a := range many {
		if a == "" || len(a) > 512 {
			return nil, invalid("aud must be a non-empty string of at most 512 characters, or an array of them")
		}
	}
	return many, nil
}

// eventsDelivered is the intersection of requested and the supported
// events; an error when a requested entry is not a URI or none is supported.
func eventsDelivered(requested []string) ([]string, error) {
	if len(requested) > maxEventTypes {
		return nil, invalid("events_requested lists more than %d events", maxEventTypes)
	}
	var out []string
	for _, e := range requested {
		if len(e) > 256 || !(strings.HasPrefix(e, "https://") || strings.HasPrefix(e, "urn:")) {
			return nil, invalid("events_requested must list event type URIs")
		}
		if slices.Contains(CAEPEvents, e) && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, invalid("none of events_requested is supported: this transmitter sends %s", strings.Join(CAEPEvents, " and "))
	}
	return out, nil
}

// applyRequest checks req and applies it to ep (a new stream when
// ep.ID is empty); replace (PUT) requires every receiver-supplied member.
func (t *Transmitter) applyRequest(ctx context.Context, c Caller, ep *Endpoint, req StreamRequest, replace bool) error {
	creating := ep.ID == ""
	if creating && req.Delivery == nil {
		req.Delivery = &StreamDelivery{Method: DeliveryPoll} // SSF 1.0 §8.1.1.1: no delivery means poll
	}
	if replace {
		if req.Delivery == nil {
			return invalid("delivery is required")
		}
		if req.EventsRequested == nil {
			return invalid("events_requested is required")
		}
	}
	if req.EventsRequested != nil {
		delivered, err := eventsDelivered(*req.EventsRequested)
		if err != nil {
			return err
		}
		ep.Stream.EventsRequested, ep.Stream.EventsDelivered = *req.EventsRequested, delivered
	} else if creating {
		ep.Stream.EventsRequested, ep.Stream.EventsDelivered = nil, slices.Clone(CAEPEvents)
	}
	if req.Description != nil || replace {
		d := ""
		if req.Description != nil {
			d = *req.Description
		}
		if len(d) > maxDescription {
			return invalid("description is longer than %d bytes", maxDescription)
		}
		ep.Stream.Description = d
	}
	if len(req.Aud) > 0 && string(req.Aud) != "null" {
		aud, err := parseAudience(req.Aud)
		if err != nil {
			return err
		}
		// A receiver may send back the configuration it read (aud is
		// transmitter-supplied), but not change it.
		if !c.Admin && !slices.Equal(aud, ep.Stream.Audience) {
			return invalid("aud is set by the transmitter: a receiver's streams are for the audience it was registered with")
		}
		ep.Stream.Audience = aud
	}
	if req.Delivery != nil {
		d := req.Delivery
		switch d.Method {
		case DeliveryPush:
			u, err := t.cfg.URLs.Check(d.EndpointURL)
			if err == nil {
				err = t.cfg.URLs.CheckResolved(ctx, u)
			}
			if err != nil {
				return invalid("delivery.endpoint_url: %v", err)
			}
			ep.URL = u.String()
		case DeliveryPoll:
			if d.EndpointURL != "" && d.EndpointURL != t.issuer+PollPath+ep.ID {
				return invalid("delivery.endpoint_url is supplied by the transmitter for poll delivery")
			}
			ep.URL = ""
		default:
			return invalid("delivery.method must be %s (push) or %s (poll)", DeliveryPush, DeliveryPoll)
		}
		if !creating && d.Method != ep.Stream.Method {
			return invalid("delivery.method cannot change: delete the stream and create another")
		}
		ep.Stream.Method = d.Method
		if len(d.AuthorizationHeader) > maxAuthorization || strings.ContainsFunc(d.AuthorizationHeader, func(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }) {
			return invalid("delivery.authorization_header must be one line of at most %d bytes", maxAuthorization)
		}
		if d.AuthorizationHeader != "" && d.Method == DeliveryPoll {
			return invalid("delivery.authorization_header is for push delivery")
		}
		ep.Stream.AuthorizationHeader = d.AuthorizationHeader // sealed by the caller, once the id is known
	}
	if len(ep.Stream.Audience) == 0 {
		return invalid("aud is required when an admin creates a stream")
	}
	// Every stream reads every event that makes a CAEP event, and sends
	// those of events_delivered: so that events_requested may change.
	ep.Types = ledgerTypesFor(CAEPEvents)
	return nil
}

// CreateStream makes a stream for c: it gets every event recorded from now on.
func (t *Transmitter) CreateStream(ctx context.Context, c Caller, req StreamRequest) (Stream, error) {
	if err := t.checkRoom(ctx); err != nil {
		return Stream{}, err
	}
	ep := &Endpoint{Kind: KindStream, Stream: &StreamConfig{}}
	if c.Receiver != nil {
		ep.Stream.Receiver, ep.Stream.Audience = c.Receiver.ID, []string{c.Receiver.Audience}
		mine, err := t.ListStreams(ctx, c)
		if err != nil {
			return Stream{}, err
		}
		if len(mine) >= MaxStreamsPerReceiver {
			return Stream{}, fmt.Errorf("%w: at most %d streams per receiver", ErrLimit, MaxStreamsPerReceiver)
		}
	}
	if err := t.applyRequest(ctx, c, ep, req, false); err != nil {
		return Stream{}, err
	}
	auth := ep.Stream.AuthorizationHeader
	ep.Stream.AuthorizationHeader = ""
	ep.ID = ulid.Make().String()
	if auth != "" {
		sealed, err := t.reg.sealer.Seal(authorizationName(ep.ID), []byte(auth))
		if err != nil {
			return Stream{}, err
		}
		ep.Stream.AuthorizationHeader = sealed
	}
	if err := t.reg.Create(ctx, ep); err != nil {
		return Stream{}, err
	}
	t.log.Info("transmit: stream created", "endpoint", ep.ID, "method", ep.Stream.Method, "receiver", ep.Stream.Receiver)
	return t.view(ep), nil
}

// stream returns the stream id c may see.
func (t *Transmitter) stream(ctx context.Context, c Caller, id string) (*Endpoint, error) {
	ep, _, err := t.reg.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !c.may(ep) {
		return nil, ErrNotFound // another's stream is not shown to exist
	}
	return ep, nil
}

// GetStream returns the stream id.
func (t *Transmitter) GetStream(ctx context.Context, c Caller, id string) (Stream, error) {
	ep, err := t.stream(ctx, c, id)
	if err != nil {
		return Stream{}, err
	}
	return t.view(ep), nil
}

// ListStreams returns the streams c may see, oldest first.
func (t *Transmitter) ListStreams(ctx context.Context, c Caller) ([]Stream, error) {
	all, err := t.reg.List(ctx, KindStream)
	if err != nil {
		return nil, err
	}
	out := []Stream{}
	for _, ep := range all {
		if c.may(ep) {
			out = append(out, t.view(ep))
		}
	}
	return out, nil
}

// UpdateStream changes the stream req.StreamID: the members given (PATCH),
// or all of them (replace, PUT).
func (t *Transmitter) UpdateStream(ctx context.Context, c Caller, req StreamRequest, replace bool) (Stream, error) {
	if _, err := t.stream(ctx, c, req.StreamID); err != nil {
		return Stream{}, err
	}
	ep, err := t.reg.Update(ctx, req.StreamID, func(ep *Endpoint) error {
		if !c.may(ep) {
			return ErrNotFound
		}
		kept := ep.Stream.AuthorizationHeader // sealed
		if err := t.applyRequest(ctx, c, ep, req, replace); err != nil {
			return err
		}
		if req.Delivery != nil {
			// PATCH keeps a header it does not send (SSF 1.0 §8.1.1.3);
			// PUT replaces it.
			if !replace && req.Delivery.AuthorizationHeader == "" {
				ep.Stream.AuthorizationHeader = kept
				return nil
			}
			ep.Stream.AuthorizationHeader = ""
			if a := req.Delivery.AuthorizationHeader; a != "" {
				sealed, err := t.reg.sealer.Seal(authorizationName(ep.ID), []byte(a))
				if err != nil {
					return err
				}
				ep.Stream.AuthorizationHeader = sealed
			}
		}
		return nil
	})
	if err != nil {
		return Stream{}, err
	}
	return t.view(ep), nil
}

// DeleteStream deletes the stream id and what it had not delivered.
func (t *Transmitter) DeleteStream(ctx context.Context, c Caller, id string) error {
	if _, err := t.stream(ctx, c, id); err != nil {
		return err
	}
	t.log.Info("transmit: stream deleted", "endpoint", id)
	return t.reg.Delete(ctx, id)
}

// StreamStatus is a stream's status (SSF 1.0 §7.1.2).
type StreamStatus struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
}

// Status returns the status of the stream id.
func (t *Transmitter) Status(ctx context.Context, c Caller, id string) (StreamStatus, error) {
	ep, err := t.stream(ctx, c, id)
	if err != nil {
		return StreamStatus{}, err
	}
	return StreamStatus{StreamID: ep.ID, Status: ep.Status, Reason: ep.StatusReason}, nil
}

// SetStatus changes the status of the stream s.StreamID: paused holds its
// events until it is enabled again; disabled passes them over.
func (t *Transmitter) SetStatus(ctx context.Context, c Caller, s StreamStatus) (StreamStatus, error) {
	switch s.Status {
	case StatusEnabled, StatusPaused, StatusDisabled:
	default:
		return StreamStatus{}, invalid("status must be enabled, paused or disabled")
	}
	if len(s.Reason) > maxDescription {
		return StreamStatus{}, invalid("reason is longer than %d bytes", maxDescription)
	}
	if _, err := t.stream(ctx, c, s.StreamID); err != nil {
		return StreamStatus{}, err
	}
	// Read before the change: events stored after it are delivered.
	last, err := t.store.LastSeq(ctx)
	if err != nil {
		return StreamStatus{}, err
	}
	var was string
	ep, err := t.reg.Update(ctx, s.StreamID, func(ep *Endpoint) error {
		was = ep.Status
		ep.Status, ep.StatusReason = s.Status, s.Reason
		return nil
	})
	if err != nil {
		return StreamStatus{}, err
	}
	if ep.Stream.Method == DeliveryPoll && was == StatusDisabled && s.Status != StatusDisabled {
		// Events recorded while disabled are not held: polling resumes
		// from now.
		if err := t.skipPolled(ctx, ep, last); err != nil {
			return StreamStatus{}, err
		}
	}
	t.log.Info("transmit: stream status changed", "endpoint", ep.ID, "from", was, "to", ep.Status)
	return StreamStatus{StreamID: ep.ID, Status: ep.Status, Reason: ep.StatusReason}, nil
}

// Verify sends the stream a verification event with state (SSF 1.0 §8.1.4):
// at once for push (in the background), with the next poll for poll.
func (t *Transmitter) Verify(ctx context.Context, c Caller, id, state string) error {
	if len(state) > maxDescription {
		return invalid("state is longer than %d bytes", maxDescription)
	}
	ep, err := t.stream(ctx, c, id)
	if err != nil {
		return err
	}
	if ep.Status != StatusEnabled {
		return invalid("the stream is %s: verification events are sent to enabled streams", ep.Status)
	}
	now := t.now()
	if _, err := t.reg.Update(ctx, id, func(ep *Endpoint) error {
		if wait := ep.LastVerification.Add(MinVerificationInterval * time.Second).Sub(now); wait > 0 {
			return fmt.Errorf("%w: one verification every %d s; retry in %d s", ErrTooSoon, MinVerificationInterval, int(wait.Seconds())+1)
		}
		ep.LastVerification = now
		return nil
	}); err != nil {
		return err
	}
	ev := map[string]any{}
	if state != "" {
		ev["state"] = state
	}
	jti := ulid.Make().String() + ".verification"
	set, err := t.sets.sign(setClaims{
		Iss: t.issuer, Jti: jti, Iat: now.Unix(), Aud: audience(ep.Stream.Audience),
		SubID: &subject{Format: "opaque", ID: ep.ID}, Events: map[string]any{EventVerification: ev},
	})
	if err != nil {
		return err
	}
	if ep.Stream.Method == DeliveryPoll {
		return t.queuePolled(ctx, ep, jti, set)
	}
	go t.pushVerification(context.WithoutCancel(ctx), ep, set)
	return nil
}

// pushVerification sends a verification SET, trying a few times.
func (t *Transmitter) pushVerification(ctx context.Context, ep *Endpoint, set string) {
	for attempt := uint64(1); attempt <= 5; attempt++ {
		err := t.pushSET(ctx, ep, set)
		if err == nil {
			return
		}
		t.log.Info("transmit: verification event not delivered", "endpoint", ep.ID, "attempt", attempt, "err", err)
		var perm *permanentError
		if errors.As(err, &perm) {
			return
		}
		time.Sleep(backoff(attempt))
	}
}

// Receiver is an SSF receiver the admin registered: its token manages its
// own streams, whose SETs are for its audience.
type Receiver struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Audience string    `json:"audience"`
	Scopes   []string  `json:"scopes"`
	Created  time.Time `json:"created"`
	// Digest is the SHA-256 of the token's secret part, hex.
	Digest string `json:"digest"`
}

// ReceiverTokenPrefix begins every receiver token: slsr_<id>_<secret>.
const ReceiverTokenPrefix = "slsr_"

// CreateReceiver registers a receiver and returns it with its bearer token:
// the only time the token is shown.
func (t *Transmitter) CreateReceiver(ctx context.Context, name, aud string, scopes []string) (*Receiver, string, error) {
	if name == "" || len(name) > 128 {
		return nil, "", invalid("name must be 1 to 128 bytes")
	}
	if aud == "" || len(aud) > 512 {
		return nil, "", invalid("audience must be 1 to 512 bytes: the aud of the receiver's SETs")
	}
	if len(scopes) == 0 {
		scopes = []string{ScopeManage, ScopeRead}
	}
	for _, s := range scopes {
		if s != ScopeManage && s != ScopeRead {
			return nil, "", invalid("scopes may be %s and %s", ScopeManage, ScopeRead)
		}
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	sum := sha256.Sum256(secret)
	r := &Receiver{ID: ulid.Make().String(), Name: name, Audience: aud, Scopes: slices.Compact(slices.Sorted(slices.Values(scopes))), Created: t.now().UTC(), Digest: hex.EncodeToString(sum[:])}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, "", err
	}
	if _, err := t.reg.bucket.Create(ctx, receiverPrefix+r.ID, b); err != nil {
		return nil, "", err
	}
	return r, ReceiverTokenPrefix + r.ID + "_" + base64.RawURLEncoding.EncodeToString(secret), nil
}

// Receivers lists the registered receivers, oldest first.
func (t *Transmitter) Receivers(ctx context.Context) ([]*Receiver, error) {
	all, err := t.reg.bucket.List(ctx, receiverPrefix+"*")
	if err != nil {
		return nil, err
	}
	out := []*Receiver{}
	for _, b := range all {
		var r Receiver
		if json.Unmarshal(b, &r) == nil {
			out = append(out, &r)
		}
	}
	slices.SortFunc(out, func(a, b *Receiver) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteReceiver removes the receiver id and its streams.
func (t *Transmitter) DeleteReceiver(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	if _, _, err := t.reg.bucket.Get(ctx, receiverPrefix+id); err != nil {
		return notFound(err)
	}
	if err := t.reg.bucket.Delete(ctx, receiverPrefix+id); err != nil {
		return err
	}
	streams, err := t.ListStreams(ctx, Caller{Receiver: &Receiver{ID: id}})
	if err != nil {
		return err
	}
	for _, s := range streams {
		if err := t.reg.Delete(ctx, s.StreamID); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// ErrUnauthenticated: not a receiver's token.
var ErrUnauthenticated = errors.New("transmit: not a receiver token")

// Authenticate returns the receiver a bearer token is of: its slsr_
// token, or an access token it got from the token endpoint (oauth.go).
// Secrets are compared in constant time.
func (t *Transmitter) Authenticate(ctx context.Context, token string) (*Receiver, error) {
	if strings.HasPrefix(token, AccessTokenPrefix) {
		return t.authenticateAccess(ctx, token)
	}
	return t.authenticateSecret(ctx, token)
}

// authenticateSecret returns the receiver whose slsr_ token this is, by its
// digest.
func (t *Transmitter) authenticateSecret(ctx context.Context, token string) (*Receiver, error) {
	rest, ok := strings.CutPrefix(token, ReceiverTokenPrefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || !validID(id) || len(secret) != 43 {
		return nil, ErrUnauthenticated
	}
	raw, err := base64.RawURLEncoding.DecodeString(secret)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	r, err := t.receiver(ctx, id)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	want, err := hex.DecodeString(r.Digest)
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return nil, ErrUnauthenticated
	}
	return r, nil
}

// receiver returns the registered receiver id (ErrUnauthenticated if there
// is none).
func (t *Transmitter) receiver(ctx context.Context, id string) (*Receiver, error) {
	b, _, err := t.reg.bucket.Get(ctx, receiverPrefix+id)
	if err != nil {
		if errors.Is(notFound(err), ErrNotFound) {
			return nil, ErrUnauthenticated
		}
		return nil, err
	}
	var r Receiver
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// HasScope reports whether r's token carries scope.
func (r *Receiver) HasScope(scope string) bool { return slices.Contains(r.Scopes, scope) }
