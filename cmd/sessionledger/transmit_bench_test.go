package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/transmit"
)

// arrivals records when each session's revocation reached each receiver.
type arrivals struct {
	mu   sync.Mutex
	at   map[string]map[string]time.Time // receiver → session id → arrival
	wake chan struct{}
}

func (a *arrivals) note(receiver, sid string) {
	now := time.Now()
	a.mu.Lock()
	if a.at[receiver] == nil {
		a.at[receiver] = map[string]time.Time{}
	}
	if _, ok := a.at[receiver][sid]; !ok {
		a.at[receiver][sid] = now
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *arrivals) all(sid string, receivers []string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range receivers {
		if _, ok := a.at[r][sid]; !ok {
			return false
		}
	}
	return true
}

// setSession returns the session id in a SET's sub_id (no verification:
// the receivers of the interop tests verify).
func setSession(set string) string {
	parts := strings.Split(set, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		SubID struct {
			Session struct {
				ID string `json:"id"`
			} `json:"session"`
		} `json:"sub_id"`
	}
	_ = json.Unmarshal(b, &c)
	return c.SubID.Session.ID
}

// BenchmarkRevocationDelivery measures, for each revocation (issue a
// session, DELETE /v1/sessions/{id}), the time from the revoke's answer to
// its arrival at a webhook receiver, an SSF push receiver and an SSF poll
// receiver (long-polling, acknowledging as it goes), all on loopback; and,
// as the references in the same run, at a plain NATS subscriber of the
// stream's subjects (the publish itself) and at the revocation feed the
// verifier library follows (eventstore.Feed: a JetStream consumer of the
// revocation subjects, so the event is stored). Run with -benchtime 100x
// for the figure the issue asks: p50 and p99 over 100 revocations. A
// negative time arrived before the revoke's answer.
func BenchmarkRevocationDelivery(b *testing.B) {
	h := boot(b, "", func(c *Config) { c.DeliveryAllowLoopback = true })
	arr := &arrivals{at: map[string]map[string]time.Time{}, wake: make(chan struct{}, 1)}
	webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Data struct {
				SessionID string `json:"session_id"`
			} `json:"data"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		arr.note("webhook", body.Data.SessionID)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer webhook.Close()
	push := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set, _ := io.ReadAll(r.Body)
		arr.note("ssf-push", setSession(string(set)))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer push.Close()
	h.mustAdmin("POST", "/v1/webhooks", `{"url":"`+webhook.URL+`","events":["session.revoked"]}`, http.StatusCreated)
	auth := ssfReceiver(b, h, "https://bench.example")
	ssfDo(b, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"`+push.URL+`"}}`, http.StatusCreated)
	polled := ssfDo(b, h, auth, "POST", transmit.ConfigurationPath, `{"delivery":{"method":"urn:ietf:rfc:8936"}}`, http.StatusCreated)["stream_id"].(string)

	// The reference: a NATS subscriber of the stream's subjects.
	nc := h.nats()
	sub, err := nc.Subscribe("ledger.>", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, ".revoked") {
			parts := strings.Split(m.Subject, ".")
			arr.note("nats", parts[len(parts)-2])
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	// The second: the feed the verifier library follows.
	feed, err := eventstore.NewFeed(context.Background(), h.nats())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	caughtUp := make(chan struct{})
	go feed.Follow(ctx, time.Time{}, func(e domain.Event) {
		if e.Type() == domain.TypeSessionRevoked {
			arr.note("feed", e.SessionID)
		}
	}, nil, func() { close(caughtUp) })
	select {
	case <-caughtUp:
	case <-time.After(10 * time.Second):
		b.Fatal("the revocation feed did not catch up within 10 s")
	}

	// The poll receiver: long polls, acknowledging what it got.
	stop := make(chan struct{})
	pollDone := make(chan struct{})
	var pollErr atomic.Value // the last failed poll, for the timeout's message
	go func() {
		defer close(pollDone)
		client := &http.Client{Timeout: 60 * time.Second}
		ack := []string{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			body, _ := json.Marshal(map[string]any{"ack": ack, "maxEvents": 100})
			req, _ := http.NewRequest("POST", h.url+transmit.PollPath+polled, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", auth.Get("Authorization"))
			resp, err := client.Do(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				err = fmt.Errorf("poll: %s", resp.Status)
			}
			if err != nil {
				pollErr.Store(err.Error())
				time.Sleep(10 * time.Millisecond) // not a busy loop that would slow the others
				continue
			}
			var out transmit.PollResponse
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			ack = ack[:0]
			for jti, set := range out.Sets {
				arr.note("ssf-poll", setSession(set))
				ack = append(ack, jti)
			}
		}
	}()

	receivers := []string{"nats", "feed", "webhook", "ssf-push", "ssf-poll"}
	lat := map[string][]time.Duration{}
	var revoke []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := h.issue(`{"user_id":"bench"}`)
		b.StartTimer()
		start := time.Now()
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
		t0 := time.Now()
		revoke = append(revoke, t0.Sub(start))
		deadline := time.After(30 * time.Second)
		for !arr.all(s.ID, receivers) {
			select {
			case <-arr.wake:
			case <-time.After(5 * time.Millisecond):
			case <-deadline:
				b.Fatalf("revocation %d did not reach every receiver within 30 s (last failed poll: %v)", i, pollErr.Load())
			}
		}
		arr.mu.Lock()
		for _, r := range receivers {
			lat[r] = append(lat[r], arr.at[r][s.ID].Sub(t0))
		}
		arr.mu.Unlock()
	}
	b.StopTimer()
	close(stop)
	// Wake the long poll with one more revocation so that it returns.
	s := h.issue(`{"user_id":"bench"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	<-pollDone

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	report := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		b.ReportMetric(ms(ds[len(ds)/2]), "p50-"+name+"-ms")
		b.ReportMetric(ms(ds[(len(ds)*99+99)/100-1]), "p99-"+name+"-ms")
		b.ReportMetric(ms(ds[len(ds)-1]), "max-"+name+"-ms")
	}
	report("revoke", revoke)
	for _, r := range receivers {
		report(r, lat[r])
	}
}
