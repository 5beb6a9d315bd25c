package audit

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/domain"
)

func subject(e domain.Event) string {
	return "s." + e.UserKey + "." + e.SessionID + "." + string(e.Type())
}

// chained encodes events as a writer would: each chained to the user's previous one.
func chained(t *testing.T, events []domain.Event) []Record {
	t.Helper()
	last := map[string][]byte{}
	var out []Record
	for i, e := range events {
		e.ID, e.Time = "E", time.Unix(int64(i), 0)
		e.Prev = last[e.UserKey]
		b, err := domain.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		last[e.UserKey] = sum[:]
		out = append(out, Record{Seq: uint64(i + 1), Subject: subject(e), Data: b})
	}
	return out
}

const sid, sid2 = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"

func TestTransitionsAreChecked(t *testing.T) {
	issued := domain.SessionIssued{UserID: "alice", Policy: domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600}}
	ev := func(s string, d domain.Payload) domain.Event {
		return domain.Event{SessionID: s, UserKey: "u", Data: d}
	}
	for _, tc := range []struct {
		name   string
		events []domain.Event
		want   string // "" for a valid history
	}{
		{"valid", []domain.Event{ev(sid, issued), ev(sid, domain.SessionRotated{Generation: 1}), ev(sid, domain.SessionReused{Outcome: domain.ReuseFamilyRevoked}), ev(sid, domain.SessionRevoked{Reason: "reuse_detected"})}, ""},
		{"generation skipped", []domain.Event{ev(sid, issued), ev(sid, domain.SessionRotated{Generation: 2})}, "rotated to generation 2 after generation 0"},
		{"rotation after revocation", []domain.Event{ev(sid, issued), ev(sid, domain.SessionRevoked{}), ev(sid, domain.SessionRotated{Generation: 1})}, "after session " + sid + " ended"},
		{"rotation after a cut-off", []domain.Event{ev(sid, issued), ev("", domain.UserSessionsRevoked{UserID: "alice"}), ev(sid, domain.SessionRotated{Generation: 1})}, "ended"},
		{"never issued", []domain.Event{ev(sid2, domain.SessionRotated{Generation: 1})}, "never issued"},
		{"issued twice", []domain.Event{ev(sid, issued), ev(sid, issued)}, "issued a second time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(subject, nil)
			for _, r := range chained(t, tc.events) {
				v.Add(r)
			}
			var got []string
			for _, p := range v.Problems() {
				got = append(got, p.String())
			}
			switch {
			case tc.want == "" && len(got) > 0:
				t.Fatalf("problems in a valid history: %v", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want) || !strings.Contains(got[0], "transition")):
				t.Fatalf("problems %v, want one transition problem mentioning %q", got, tc.want)
			}
		})
	}
	t.Run("gap and wrong subject", func(t *testing.T) {
		rs := chained(t, []domain.Event{ev(sid, issued), ev(sid, domain.SessionRotated{Generation: 1})})
		rs[1].Seq = 5
		rs[1].Subject = "s.other"
		v := NewVerifier(subject, nil)
		for _, r := range rs {
			v.Add(r)
		}
		p := v.Problems()
		if len(p) != 2 || p[0].Kind != "missing" || !strings.Contains(p[0].Detail, "2 to 4") || p[1].Kind != "subject" {
			t.Fatalf("problems %v", p)
		}
	})
}
