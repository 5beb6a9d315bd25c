package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sessionledger/sessionledger/transmit"
)

// TestReadmeSSFWalkThrough runs the curl walk-through of "For services that
// speak HTTP" with bash, curl and jq against a ledger started as the README
// starts it, and checks what it prints: the jwks_uri, one session-revoked
// SET for the revoked session of carol with the admin as initiating
// entity, and no SET once it is acknowledged.
func TestReadmeSSFWalkThrough(t *testing.T) {
	readmeRequireTools(t, "go", "bash", "curl", "jq")
	block := readmeSection(t, readmeBlocks(t), "For services that speak HTTP")[0]

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), readmeModule+"/cmd/sessionledger")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ports := readmeFreePorts(t, 2)
	script := strings.ReplaceAll(block, "localhost:8080", "localhost:"+ports[0])
	if p := regexp.MustCompile(`\b8080\b`).FindString(script); p != "" {
		t.Fatalf("README.md: port 8080 is used in a form this test does not rewrite:\n%s", block)
	}
	work := t.TempDir()
	env := readmeEnv()
	logs := readmeStart(t, work, fmt.Sprintf("%s serve --http-addr :%s --nats-listen 127.0.0.1:%s", filepath.Join(bin, "sessionledger"), ports[0], ports[1]), env)
	readmeWaitOK(t, "http://127.0.0.1:"+ports[0]+"/readyz", logs)

	out := readmeRun(t, work, script, env)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("the walk-through printed %d lines, want 3 (jwks_uri, the SET's claims, the empty poll):\n%s", len(lines), out)
	}
	if want := "http://localhost:" + ports[0] + transmit.SETKeysPath; lines[0] != want {
		t.Errorf("jwks_uri %q, want %q", lines[0], want)
	}
	var set struct {
		SubID struct {
			Format  string `json:"format"`
			User    map[string]string
			Session map[string]string
		} `json:"sub_id"`
		Events map[string]struct {
			InitiatingEntity string            `json:"initiating_entity"`
			ReasonAdmin      map[string]string `json:"reason_admin"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &set); err != nil {
		t.Fatalf("the SET's claims: %v\n%s", err, lines[1])
	}
	ev, ok := set.Events[transmit.EventSessionRevoked]
	if set.SubID.Format != "complex" || set.SubID.User["sub"] != "carol" || set.SubID.User["format"] != "iss_sub" || set.SubID.Session["format"] != "opaque" ||
		!ok || ev.InitiatingEntity != "admin" || ev.ReasonAdmin["en"] == "" {
		t.Errorf("the SET is not the README's session-revoked of carol's session by the admin:\n%s", lines[1])
	}
	if lines[2] != `{"sets":{}}` {
		t.Errorf("the poll after the ack printed %s, want {\"sets\":{}}", lines[2])
	}
	for _, shown := range readmeShown(block) {
		if strings.HasPrefix(shown, "http://") && shown != "http://localhost:8080"+transmit.SETKeysPath {
			t.Errorf("the README shows %q as the jwks_uri", shown)
		}
	}
	if strings.Contains(logs.String(), "slsr_") {
		t.Error("a receiver token is in the ledger's log")
	}
}
