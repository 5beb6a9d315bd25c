package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeKeyRotation runs the README's block of "Keys and their
// rotation" with bash and curl against a ledger built from this tree and
// started as the README starts it (go run ./cmd/sessionledger serve; the
// block's go run lines run the same binary), and checks what it prints: the
// key listing, a pending signing key of generation 1 with the columns the
// README shows, a pending token key, and the old admin token refused while
// the new one is taken.
func TestReadmeKeyRotation(t *testing.T) {
	readmeRequireTools(t, "go", "bash", "curl")
	block := readmeSection(t, readmeBlocks(t), "Keys and their rotation")[0]

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), readmeModule+"/cmd/sessionledger")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ports := readmeFreePorts(t, 2)
	binary := filepath.Join(bin, "sessionledger")
	rewrite := strings.NewReplacer(
		"localhost:8080", "localhost:"+ports[0],
		"go run ./cmd/sessionledger", binary+" --url http://localhost:"+ports[0],
	).Replace
	script := rewrite(block)
	// keys and admin-tokens take --url only for keys: put it where it belongs.
	script = strings.ReplaceAll(script, binary+" --url http://localhost:"+ports[0]+" keys", binary+" keys")
	script = strings.ReplaceAll(script, binary+" --url http://localhost:"+ports[0]+" admin-tokens", binary+" admin-tokens")
	script = regexp.MustCompile(`(?m)^(\S+ keys \S+( \S+)?)$`).ReplaceAllString(script, "$1 --url http://localhost:"+ports[0])
	if p := regexp.MustCompile(`\b8080\b`).FindString(script); p != "" {
		t.Fatalf("README.md: port 8080 is used in a form this test does not rewrite:\n%s", block)
	}

	work := t.TempDir()
	env := readmeEnv()
	logs := readmeStart(t, work, fmt.Sprintf("%s serve --http-addr :%s --nats-listen 127.0.0.1:%s", binary, ports[0], ports[1]), env)
	readmeWaitOK(t, "http://127.0.0.1:"+ports[0]+"/readyz", logs)

	out := readmeRun(t, work, script, env)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	field := regexp.MustCompile(`\s{2,}`)
	var pendingSigning, pendingToken bool
	for _, l := range lines {
		f := field.Split(l, -1)
		if len(f) < 5 {
			continue
		}
		switch {
		case f[0] == "signing" && f[1] == "1" && f[3] == "EdDSA" && f[4] == "pending":
			pendingSigning = true
		case f[0] == "token" && f[1] == "1" && f[4] == "pending":
			pendingToken = true
		}
	}
	shown := readmeShown(block)
	if got, want := strings.Join(field.Split(lines[0], -1), "|"), strings.Join(field.Split(shown[0], -1), "|"); got != want {
		t.Errorf("the listing's columns are %s, the README shows %s", got, want)
	}
	if !pendingSigning || !pendingToken {
		t.Errorf("no pending signing key of generation 1 (%v) or token key (%v):\n%s", pendingSigning, pendingToken, out)
	}
	if got := strings.Join(lines[len(lines)-2:], " "); got != "401 200" {
		t.Errorf("the old and the new admin token got %q, want the README's 401 then 200:\n%s", got, out)
	}
	if strings.Contains(logs.String(), "slat_") {
		t.Error("an admin token is in the ledger's log")
	}
}
