package domain

import (
	"fmt"
	"time"
)

// Seconds is a whole number of seconds, the unit policies use in JSON.
type Seconds int64

// Duration converts s to a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) * time.Second }

// Policy fixes a session's lifetimes. It is recorded in session.issued, so a
// replay never depends on today's configuration.
type Policy struct {
	Name              string  `json:"name"`               // preset name, or "custom"
	AccessTokenTTL    Seconds `json:"access_token_ttl"`   // lifetime of each access token
	AbsoluteLifetime  Seconds `json:"absolute_lifetime"`  // counted from issue
	InactivityTimeout Seconds `json:"inactivity_timeout"` // counted from the last refresh; 0 = none
}

// Preset names.
const (
	PolicyConsumer     = "consumer"
	PolicyHighSecurity = "high_security"
	PolicyMobile       = "mobile"
	PolicyCustom       = "custom"
)

const day = 24 * 60 * 60

var presets = map[string]Policy{
	PolicyConsumer:     {Name: PolicyConsumer, AccessTokenTTL: 3600, AbsoluteLifetime: 30 * day, InactivityTimeout: 5 * day},
	PolicyHighSecurity: {Name: PolicyHighSecurity, AccessTokenTTL: 5 * 60, AbsoluteLifetime: day, InactivityTimeout: 30 * 60},
	PolicyMobile:       {Name: PolicyMobile, AccessTokenTTL: 3600, AbsoluteLifetime: 180 * day, InactivityTimeout: 0},
}

// PresetNames lists the preset policy names.
func PresetNames() []string { return []string{PolicyConsumer, PolicyHighSecurity, PolicyMobile} }

// Preset returns the named preset policy.
func Preset(name string) (Policy, error) {
	p, ok := presets[name]
	if !ok {
		return Policy{}, &ValidationError{Field: "policy", Reason: "is not a preset (consumer, high_security, mobile) or an object of whole seconds"}
	}
	return p, nil
}

// MaxPolicySeconds bounds every policy value (ten years), far inside what
// time.Duration can hold.
const MaxPolicySeconds Seconds = 10 * 365 * day

// Validate checks a policy's values.
func (p Policy) Validate() error {
	for _, f := range []struct {
		name string
		v    Seconds
	}{{"access_token_ttl", p.AccessTokenTTL}, {"absolute_lifetime", p.AbsoluteLifetime}, {"inactivity_timeout", p.InactivityTimeout}} {
		if f.v > MaxPolicySeconds {
			return &ValidationError{Field: "policy." + f.name, Reason: fmt.Sprintf("must be at most %d seconds (ten years)", MaxPolicySeconds)}
		}
	}
	switch {
	case p.AccessTokenTTL < 1:
		return &ValidationError{Field: "policy.access_token_ttl", Reason: "must be at least 1 second"}
	case p.AbsoluteLifetime < 1:
		return &ValidationError{Field: "policy.absolute_lifetime", Reason: "must be at least 1 second"}
	case p.AbsoluteLifetime < p.AccessTokenTTL:
		return &ValidationError{Field: "policy.absolute_lifetime", Reason: "must not be shorter than access_token_ttl"}
	case p.InactivityTimeout < 0:
		return &ValidationError{Field: "policy.inactivity_timeout", Reason: "must be 0 (none) or at least 1 second"}
	}
	return nil
}
