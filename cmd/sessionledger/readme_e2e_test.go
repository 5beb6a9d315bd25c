package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
)

// The tests in this file run README.md's own shell blocks, so they fail when
// the README goes stale: the walk-through and the example service against a
// ledger built from this tree, and the commands that import the verifier
// from a module outside the repository.

const readmeModule = "github.com/sessionledger/sessionledger"

// readmeRepoRoot is the repository's root directory (tests run in cmd/sessionledger).
func readmeRepoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module "+readmeModule+"\n") {
		t.Fatalf("%s is not the root of %s: %v", root, readmeModule, err)
	}
	return root
}

// readmeBlocks returns the ```sh blocks of README.md under each "## " heading,
// keyed by the heading's text (without the "## ").
func readmeBlocks(t *testing.T) map[string][]string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(readmeRepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]string{}
	heading := ""
	var block *strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case block != nil && line == "```":
			blocks[heading] = append(blocks[heading], block.String())
			block = nil
		case block != nil:
			block.WriteString(line + "\n")
		case line == "```sh":
			block = &strings.Builder{}
		case strings.HasPrefix(line, "## "):
			heading = strings.TrimPrefix(line, "## ")
		}
	}
	if block != nil {
		t.Fatal("README.md: a ```sh block is never closed")
	}
	return blocks
}

// readmeSection returns the sh blocks of the README section whose heading
// starts with prefix.
func readmeSection(t *testing.T, blocks map[string][]string, prefix string) []string {
	t.Helper()
	var found []string
	for heading, b := range blocks {
		if strings.HasPrefix(heading, prefix) {
			if found != nil {
				t.Fatalf("README.md: two sections start with %q", prefix)
			}
			found = b
		}
	}
	if len(found) == 0 {
		t.Fatalf("README.md: no section %q with a ```sh block", prefix)
	}
	return found
}

// readmeBlockWith returns the index of the first block containing s.
func readmeBlockWith(t *testing.T, blocks []string, s string) int {
	t.Helper()
	for i, b := range blocks {
		if strings.Contains(b, s) {
			return i
		}
	}
	t.Fatalf("README.md: no ```sh block with %q", s)
	return -1
}

// readmeShown is what a README block shows as output: its comment lines
// indented by three spaces ("#   …"), in order.
func readmeShown(block string) []string {
	var out []string
	for _, line := range strings.Split(block, "\n") {
		if s, ok := strings.CutPrefix(line, "#   "); ok {
			out = append(out, s)
		}
	}
	return out
}

// readmeSameLine reports whether a line a command printed is the line the README
// shows: equal, or, for JSON objects, equal but for the value of session_id
// (an id the README shows one of), which must be a ULID.
func readmeSameLine(shown, got string) bool {
	if shown == got {
		return true
	}
	var s, g map[string]any
	if json.Unmarshal([]byte(shown), &s) != nil || json.Unmarshal([]byte(got), &g) != nil {
		return false
	}
	sid, _ := g["session_id"].(string)
	if _, ok := s["session_id"]; !ok || len(sid) != 26 {
		return false
	}
	s["session_id"] = sid
	a, _ := json.Marshal(s)
	b, _ := json.Marshal(g)
	return bytes.Equal(a, b)
}

// readmeRequireTools fails the test, naming the tool, unless every tool is on PATH.
func readmeRequireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's commands need %s, which is not on PATH: %v", tool, err)
		}
	}
}

// readmeEnv is the test's environment without SESSIONLEDGER_* variables (the
// README's ledger runs on its defaults) and with extra added.
func readmeEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONLEDGER_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// readmeRun runs a README block with bash -euo pipefail in dir (-u: a
// variable the README never defines is an error, not an empty string) and
// returns its standard output.
func readmeRun(t *testing.T, dir, script string, env []string) string {
	t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("README commands failed: %v\n--- commands:\n%s--- stdout:\n%s--- stderr:\n%s", err, script, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// readmeFreePorts returns n TCP ports that were free on every interface a moment ago.
func readmeFreePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports
}

// readmeStart runs a command line with bash (exec, so the process is
// the command's) in dir until the test ends; its standard error goes to logs.
func readmeStart(t *testing.T, dir, line string, env []string) *syncBuffer {
	t.Helper()
	cmd := exec.Command("bash", "-c", "exec "+line)
	cmd.Dir = dir
	cmd.Env = env
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return logs
}

// readmeWaitOK waits until GET url answers 200.
func readmeWaitOK(t *testing.T, url string, logs *syncBuffer) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	poll.Until(t, 30*time.Second, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return fmt.Errorf("GET %s: %v; log:\n%s", url, err, logs.String())
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %d; log:\n%s", url, resp.StatusCode, logs.String())
		}
		return nil
	})
}

// TestReadmeWalkThroughAndExampleAPI runs the README's walk-through and its
// example-service commands, as extracted from README.md, with bash, curl and
// jq against a ledger and example-api freshly built from this tree, and
// checks what they print against what the README says they print.
//
// Ports: the README's localhost:8080 (ledger HTTP), localhost:8081
// (example-api) and 127.0.0.1:4222 (embedded NATS) are rewritten in the
// extracted text to free ports, consistently, and the processes are started
// on those: tests of other packages or other checkouts may hold the README's
// ports. The README's /tmp/ files go to a directory of the test's own.
func TestReadmeWalkThroughAndExampleAPI(t *testing.T) {
	readmeRequireTools(t, "go", "bash", "curl", "jq")
	all := readmeBlocks(t)
	walk := readmeSection(t, all, "Walk-through")[0]
	service := readmeSection(t, all, "For service owners")
	startAt := readmeBlockWith(t, service, "go run ./cmd/example-api")
	if startAt+1 >= len(service) {
		t.Fatal("README.md: no ```sh block after the one that starts example-api")
	}
	startLine := strings.TrimSpace(service[startAt])
	if strings.Contains(startLine, "\n") {
		t.Fatalf("README.md: the block that starts example-api is more than one line:\n%s", startLine)
	}
	calls := service[startAt+1]

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), readmeModule+"/cmd/sessionledger", readmeModule+"/cmd/example-api")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	ports := readmeFreePorts(t, 3)
	ledgerPort, apiPort, natsPort := ports[0], ports[1], ports[2]
	files := t.TempDir()
	rewrite := strings.NewReplacer(
		"localhost:8080", "localhost:"+ledgerPort,
		"localhost:8081", "localhost:"+apiPort,
		"127.0.0.1:4222", "127.0.0.1:"+natsPort,
		"/tmp/", files+"/",
	).Replace
	readmePort := regexp.MustCompile(`\b(8080|8081|4222)\b`)
	for _, s := range []string{walk, startLine, calls} {
		if p := readmePort.FindString(rewrite(s)); p != "" {
			t.Fatalf("README.md: port %s is used in a form this test does not rewrite:\n%s", p, s)
		}
	}

	// The ledger as the README starts it (go run ./cmd/sessionledger serve:
	// HTTP on :8080, NATS on 127.0.0.1:4222, data in ./data), on the
	// rewritten ports, in a directory of its own so data/admin-token is
	// where the walk-through reads it.
	work := t.TempDir()
	env := readmeEnv()
	ledgerLogs := readmeStart(t, work, fmt.Sprintf("%s serve --http-addr :%s --nats-listen 127.0.0.1:%s",
		filepath.Join(bin, "sessionledger"), ledgerPort, natsPort), env)
	readmeWaitOK(t, "http://127.0.0.1:"+ledgerPort+"/readyz", ledgerLogs)

	// The walk-through: three token pairs (jq . prints each over several
	// lines), then what the README shows after them.
	out := readmeRun(t, work, rewrite(walk), env)
	dec := json.NewDecoder(strings.NewReader(out))
	var printed []string
	var pairs []map[string]any
	for {
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			break
		}
		if len(pairs) < 3 {
			pairs = append(pairs, v)
			continue
		}
		b, _ := json.Marshal(v)
		printed = append(printed, string(b))
	}
	rest := strings.TrimSpace(out[dec.InputOffset():])
	if rest != "" {
		printed = append(printed, strings.Split(rest, "\n")...)
	}
	if len(pairs) < 3 {
		t.Fatalf("walk-through: want three token pairs first, got:\n%s", out)
	}
	sid, _ := pairs[0]["session_id"].(string)
	for i, p := range pairs {
		if p["refresh_token"] == nil || p["access_token"] == nil || sid == "" || p["session_id"] != sid {
			t.Fatalf("walk-through: answer %d is not a token pair of the session: %v", i, p)
		}
	}
	shown := readmeShown(walk)
	readmeCompare(t, "walk-through", shown, printed)
	// What the walk-through is for, whatever the README's comments say.
	want := []string{
		`{"error":"invalid_grant","error_description":"The refresh token was already used; the session is revoked"}`,
		`{"error":"invalid_grant","error_description":"The refresh token is not valid"}`,
		`{"active":false}`,
		"session.issued", "session.rotated", "session.rotated", "session.reused", "session.revoked",
	}
	readmeCompare(t, "walk-through (reuse, inactive, history)", want, printed)

	// The example service, started with the README's command line (go run
	// replaced by the built binary, listening on the rewritten port: the
	// README's default 127.0.0.1:8081).
	apiLine := rewrite(startLine)
	if !strings.HasPrefix(apiLine, "go run ./cmd/example-api ") {
		t.Fatalf("README.md: example-api is started otherwise: %s", startLine)
	}
	apiLine = filepath.Join(bin, "example-api") + " --listen 127.0.0.1:" + apiPort + " " + strings.TrimPrefix(apiLine, "go run ./cmd/example-api ")
	apiLogs := readmeStart(t, work, apiLine, env)
	readmeWaitOK(t, "http://127.0.0.1:"+apiPort+"/healthz", apiLogs)

	// The service learns of a revocation from the stream about a millisecond
	// after the ledger records it; a loaded machine can run the README's last
	// curl inside that gap and get 200. Only then is the block run again, with
	// a fresh session, at most twice more: a revocation that never arrives,
	// or always later than the next command, still fails.
	shown = readmeShown(calls)
	want = []string{`{"claims":{"role":"editor"},"session_id":"01M84TAWJ2SGGW0WQD7CMGFNP8","user_id":"alice"}`, "200", "200", "the session has been revoked", "401"}
	for attempt := 1; ; attempt++ {
		got := strings.Split(strings.TrimSpace(readmeRun(t, work, rewrite(calls), env)), "\n")
		if attempt < 3 && len(got) == len(want) && got[len(got)-1] == "200" {
			t.Logf("attempt %d: the last /me answered 200 before the service had the revocation; once more", attempt)
			continue
		}
		readmeCompare(t, "example-api", shown, got)
		readmeCompare(t, "example-api (200, then 401 once revoked)", want, got)
		break
	}
}

// readmeCompare fails the test unless got is want, line by line (readmeSameLine).
func readmeCompare(t *testing.T, what string, want, got []string) {
	t.Helper()
	ok := len(want) == len(got)
	for i := 0; ok && i < len(want); i++ {
		ok = readmeSameLine(want[i], got[i])
	}
	if !ok {
		t.Fatalf("%s printed:\n  %s\nwant (as README.md shows):\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// readmeOutsideMain is a service in another module using the verifier as the
// README's Go example does: a feed from eventstore, verifier.New, the
// net/http middleware, and the echo one.
const readmeOutsideMain = `package main

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/verifier"
	"github.com/sessionledger/sessionledger/verifier/echoverifier"
)

func main() {
	ctx := context.Background()
	conn, err := eventstore.Connect("nats://127.0.0.1:4222", eventstore.Auth{}, "my-service")
	if err != nil {
		panic(err)
	}
	feed, err := conn.Feed(ctx)
	if err != nil {
		panic(err)
	}
	v, err := verifier.New(ctx, verifier.Config{
		JWKSURL:     "http://localhost:8080/.well-known/jwks.json",
		Issuer:      "http://localhost:8080",
		Audience:    "http://localhost:8080",
		MaxTokenTTL: time.Hour,
	}, feed)
	if err != nil {
		panic(err)
	}
	defer v.Close()
	http.Handle("/api/", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verifier.ClaimsFrom(r.Context())
		_, _ = w.Write([]byte(c.Subject))
	})))
	e := echo.New()
	e.Use(echoverifier.Middleware(v))
}
`

// TestOutsideModuleImportsVerifierAsReadmeSays runs the README's commands for
// importing the verifier from another module: in a new module in a
// temporary directory, beside a "sessionledger" that is this repository (a
// symbolic link standing for the clone), with a main.go that uses the
// verifier. The commands must add the requirement and the replace, resolve
// the dependencies, build, and vendor a copy that builds with the checkout
// gone and nothing fetched.
func TestOutsideModuleImportsVerifierAsReadmeSays(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	readmeRequireTools(t, "bash")
	service := readmeSection(t, readmeBlocks(t), "For service owners")
	commands := service[readmeBlockWith(t, service, "go mod edit")]

	dir := t.TempDir()
	checkout := filepath.Join(dir, "sessionledger")
	if err := os.Symlink(readmeRepoRoot(t), checkout); err != nil {
		t.Fatal(err)
	}
	svc := filepath.Join(dir, "myservice")
	if err := os.Mkdir(svc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(svc, "main.go"), []byte(readmeOutsideMain), 0o644); err != nil {
		t.Fatal(err)
	}
	// The go command as a user has it: no workspace, no -mod from GOFLAGS
	// (a go build that is not told the module's requirements then fails
	// rather than adds them).
	env := readmeEnv("GOWORK=off", "GOFLAGS=-buildvcs=false")
	readmeRun(t, svc, "go mod init example.com/myservice", env)
	readmeRun(t, svc, commands, env)

	gomod, err := os.ReadFile(filepath.Join(svc, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{readmeModule + " v0.0.0\n", "replace " + readmeModule + " => ../sessionledger", "github.com/nats-io/nats.go"} {
		if !bytes.Contains(gomod, []byte(want)) {
			t.Fatalf("go.mod after the README's commands has no %q:\n%s", want, gomod)
		}
	}
	vendored, err := os.ReadFile(filepath.Join(svc, "vendor", "modules.txt"))
	if err != nil || !bytes.Contains(vendored, []byte("\n"+readmeModule+"/verifier\n")) {
		t.Fatalf("vendor/modules.txt has no %s/verifier: %v\n%s", readmeModule, err, vendored)
	}

	// The vendored copy alone: the checkout gone, nothing fetched. -trimpath
	// only keeps the build cache of use: without it a vendored package's
	// cache key holds its directory, new in every run, and the build would
	// compile nats.go, echo and the rest again each time (25 s here).
	if err := os.Remove(checkout); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "myservice-bin"), ".")
	build.Dir = svc
	build.Env = readmeEnv("GOWORK=off", "GOFLAGS=-mod=vendor -trimpath -buildvcs=false", "GOPROXY=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build from vendor/ without the checkout: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "myservice-bin")); err != nil {
		t.Fatal(err)
	}
}
