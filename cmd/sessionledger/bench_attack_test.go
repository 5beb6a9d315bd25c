package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/sessionledger/sessionledger/internal/bench"
)

// The attack and big-user scenarios run the ledger as a child process, by
// default this executable with "serve". In a test that is the test binary, so
// given "serve" as its first argument (which go test never passes) it is
// sessionledger serve. This runs before TestMain.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		main()
		os.Exit(0)
	}
}

// runBench runs "sessionledger bench" with args and --json, with this test
// binary as the ledger, and decodes its answer into r.
func runBench(t *testing.T, r any, args ...string) {
	t.Helper()
	var out bytes.Buffer
	args = append([]string{"bench", "--server-binary", os.Args[0], "--json"}, args...)
	if err := run(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
}

// onlyStatus reports whether every answer of p had status.
func onlyStatus(p bench.Phase, status int) bool {
	return p.Requests > 0 && len(p.Statuses) == 1 && p.Statuses[status] == p.Requests
}

func TestBenchAttackScenario(t *testing.T) {
	var r bench.AttackResult
	runBench(t, &r, "--scenario", "attack", "--users", "200", "--clients", "4", "--forged-clients", "2", "--generation", "50", "--forged-rate", "100", "--duration", "1s")
	if r.Preload.Issued != 200 || !onlyStatus(r.Genuine, http.StatusOK) || r.Genuine.OK == 0 {
		t.Errorf("preload %+v, genuine refreshes %+v: want 200 sessions, then only 200s", r.Preload, r.Genuine)
	}
	if r.Genuine.ServerCPU == nil || r.Genuine.ServerCPU.PerRequestMS <= 0 {
		t.Errorf("genuine refreshes: server CPU %+v, want some per request", r.Genuine.ServerCPU)
	}
	for _, kind := range bench.ForgedKinds {
		p := r.Forged[kind]
		if !onlyStatus(p, http.StatusBadRequest) || p.OK != p.Requests || p.ServerCPU == nil || r.CPURatio[kind] <= 0 {
			t.Errorf("forged %s: %+v, CPU %+v, ratio %v: want only 400 invalid_grant and the server CPU per refusal", kind, p, p.ServerCPU, r.CPURatio[kind])
		}
	}
	ua := r.UnderAttack
	if ua.Forged.Sent < 50 || ua.Forged.OK != ua.Forged.Requests || ua.Genuine.OK == 0 || r.RateRatio <= 0 || ua.ServerCPU == nil {
		t.Errorf("under attack %+v, genuine ÷ undisturbed %v: want about 100 forged requests refused and genuine refreshes meanwhile", ua, r.RateRatio)
	}
}

func TestBenchBigUserScenario(t *testing.T) {
	var r bench.BigUserResult
	runBench(t, &r, "--scenario", "big-user", "--user-sessions", "50", "--clients", "4", "--other-clients", "2", "--other-rate", "20", "--duration", "1s")
	if r.IssueManyUsers.Issued != 50 || r.IssueOneUser.Issued != 50 || r.IssueOneUser.ServerCPU == nil {
		t.Errorf("issued %d for 50 users, %d for one user (server CPU %+v): want 50 each", r.IssueManyUsers.Issued, r.IssueOneUser.Issued, r.IssueOneUser.ServerCPU)
	}
	if !onlyStatus(r.OthersAlone, http.StatusOK) || !onlyStatus(r.ManyUsers.Refresh, http.StatusOK) || r.OneUser.Refresh.OK == 0 ||
		r.OneUser.Refresh.Dropped != 0 || r.ManyUsers.Others.OK == 0 || r.OneUser.Others.OK == 0 {
		t.Errorf("alone %+v, many users %+v, one user %+v: want refreshes in every phase, none refused", r.OthersAlone, r.ManyUsers, r.OneUser)
	}
	if r.ManyUsers.ServerCPU == nil || r.RateRatio <= 0 || r.OthersP99Ratio <= 0 {
		t.Errorf("server CPU %+v, one ÷ many %v, others' p99 ratio %v: want all measured", r.ManyUsers.ServerCPU, r.RateRatio, r.OthersP99Ratio)
	}
	if r.List.Status != http.StatusOK || r.List.Sessions < 50 || r.List.Bytes == 0 {
		t.Errorf("listing %+v: want the big user's 50 sessions", r.List)
	}
}
