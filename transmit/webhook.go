package transmit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com): each message
// carries webhook-id, webhook-timestamp and webhook-signature, "v1," and
// the base64 HMAC-SHA256 of "id.timestamp.body" under the endpoint's secret.

// SecretPrefix begins a webhook signing secret, as the specification's
// libraries expect: whsec_ and the key in standard base64.
const SecretPrefix = "whsec_"

// Errors of VerifyWebhook.
var (
	ErrWebhookHeaders   = errors.New("transmit: the webhook headers are missing or malformed")
	ErrWebhookTimestamp = errors.New("transmit: the webhook timestamp is too far from now")
	ErrWebhookSignature = errors.New("transmit: no webhook signature matches")
)

// NewWebhookSecret returns a new signing secret: 32 random bytes.
func NewWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// ParseWebhookSecret returns the key of a signing secret (24 to 64 bytes).
func ParseWebhookSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, errors.New("transmit: a webhook secret begins with " + SecretPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(b) < 24 || len(b) > 64 {
		return nil, errors.New("transmit: a webhook secret is " + SecretPrefix + " and 24 to 64 bytes in standard base64")
	}
	return b, nil
}

// webhookSignature is the v1 signature of one message under key.
func webhookSignature(key []byte, id string, ts int64, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// SignWebhook returns the webhook-signature header of a message: one
// "v1,<base64>" per secret (two while a rotated secret still signs),
// separated by spaces.
func SignWebhook(secrets [][]byte, id string, ts time.Time, body []byte) string {
	sigs := make([]string, 0, len(secrets))
	for _, k := range secrets {
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(webhookSignature(k, id, ts.Unix(), body)))
	}
	return strings.Join(sigs, " ")
}

// WebhookHeaders returns the headers of a message: the three Standard
// Webhooks headers and its JSON content type.
func WebhookHeaders(secrets [][]byte, id string, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", SignWebhook(secrets, id, ts, body))
	return h
}

// VerifyWebhook checks a message as a receiver does: its timestamp within
// tolerance of now, and one of its v1 signatures made with secret
// (compared in constant time).
func VerifyWebhook(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return ErrWebhookHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrWebhookHeaders
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrWebhookTimestamp
	}
	want := webhookSignature(secret, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		v, sig, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrWebhookSignature
}
