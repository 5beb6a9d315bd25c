package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
)

// TestBrowserInChromium runs interop/browser-cookie-mode.mjs: the ledger in
// cookie mode and @sessionledger/client (clients/js, built from its source
// here) in Debian's headless Chromium, driven by playwright-core. Two tabs
// refreshing at once around expiry, a tab frozen or crashed while holding
// the refresh lock, pages of unlisted origins posting with the user's
// cookie, sign-out and a replayed refresh token seen by both tabs, and
// "sign out other devices".
//
// It needs Chromium (requireChromium) and Node.js.
func TestBrowserInChromium(t *testing.T) {
	chromium := requireChromium(t)
	node, dir := nodeInterop(t)
	clientJS := buildJSClient(t)

	ledgerAddr, appPort := freeAddr(t), freeAddr(t)
	_, ledgerPort, _ := net.SplitHostPort(ledgerAddr)
	_, appPortNum, _ := net.SplitHostPort(appPort)
	const grace = 2 * time.Second
	h := boot(t, "", func(c *Config) {
		c.HTTPAddr = ledgerAddr
		c.Issuer = "http://localhost:" + ledgerPort
		c.BrowserOrigins = []string{"http://localhost:" + appPortNum}
		c.ReuseGrace, c.RequestTimeout = grace, grace/2
	})

	cmd := exec.Command(node, "browser-cookie-mode.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"LEDGER=http://localhost:"+ledgerPort, "ADMIN="+testAdminToken, "APP_PORT="+appPortNum,
		"CLIENT_JS="+clientJS, "CHROMIUM="+chromium, "GRACE_MS="+strconv.FormatInt(grace.Milliseconds(), 10))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("node browser-cookie-mode.mjs: %v\n%s\nledger log:\n%s", err, out.String(), h.logs.String())
	}
	t.Logf("node browser-cookie-mode.mjs:\n%s", out.String())
	if n := strings.Count(out.String(), "ok: "); n != 10 {
		t.Fatalf("%d checks passed, want 10", n)
	}
}

// buildJSClient builds clients/js from its source into a temporary
// directory (npm ci, then the package's build) and returns the path of its
// index.js. The build must equal the committed dist/, which the demo embeds.
func buildJSClient(t *testing.T) string {
	t.Helper()
	jsBuild.Do(func() {
		dir, err := filepath.Abs(filepath.Join("..", "..", "clients", "js"))
		if err != nil {
			jsBuildErr = err
			return
		}
		out, err := os.MkdirTemp("", "sessionledger-client-")
		if err != nil {
			jsBuildErr = err
			return
		}
		for _, args := range [][]string{
			{"npm", "ci", "--no-audit", "--no-fund"},
			{"npm", "run", "build", "--", "--outDir", out},
		} {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = dir
			if b, err := cmd.CombinedOutput(); err != nil {
				jsBuildErr = fmt.Errorf("%s in clients/js: %v\n%s", strings.Join(args, " "), err, b)
				return
			}
		}
		for _, f := range []string{"index.js", "index.d.ts"} {
			built, err1 := os.ReadFile(filepath.Join(out, f))
			committed, err2 := os.ReadFile(filepath.Join(dir, "dist", f))
			if err1 != nil || err2 != nil || !bytes.Equal(built, committed) {
				jsBuildErr = fmt.Errorf("clients/js/dist/%s is not what `npm run build` makes of src/ (%v, %v): run it and commit dist/", f, err1, err2)
				return
			}
		}
		jsBuildPath = filepath.Join(out, "index.js")
	})
	if jsBuildErr != nil {
		t.Fatal(jsBuildErr)
	}
	return jsBuildPath
}

var (
	jsBuild     sync.Once
	jsBuildPath string
	jsBuildErr  error
)

// TestBrowserDemo starts examples/browser-demo as the README does and
// drives it in Chromium (interop/browser-demo.mjs): sign in, the claims, the
// devices, sign out other devices, sign out.
func TestBrowserDemo(t *testing.T) {
	chromium := requireChromium(t)
	node, dir := nodeInterop(t)
	buildJSClient(t) // the demo embeds the committed dist/, which must be current

	ledgerAddr, demoAddr := freeAddr(t), freeAddr(t)
	_, ledgerPort, _ := net.SplitHostPort(ledgerAddr)
	_, demoPort, _ := net.SplitHostPort(demoAddr)
	h := boot(t, "", func(c *Config) {
		c.HTTPAddr = ledgerAddr
		c.Issuer = "http://localhost:" + ledgerPort
		c.BrowserOrigins = []string{"http://localhost:" + demoPort}
	})
	bin := filepath.Join(t.TempDir(), "browser-demo")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/browser-demo").CombinedOutput(); err != nil {
		t.Fatalf("go build examples/browser-demo: %v\n%s", err, out)
	}
	var demoOut bytes.Buffer
	demo := exec.Command(bin, "--listen", demoAddr, "--ledger-url", "http://localhost:"+ledgerPort)
	demo.Env = append(os.Environ(), "SESSIONLEDGER_ADMIN_TOKEN="+testAdminToken)
	demo.Stdout, demo.Stderr = &demoOut, &demoOut
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = demo.Process.Kill(); _ = demo.Wait() })
	poll.Until(t, 20*time.Second, func() error {
		c, err := net.Dial("tcp", demoAddr)
		if err == nil {
			c.Close()
		}
		return err
	})

	cmd := exec.Command(node, "browser-demo.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEMO=http://localhost:"+demoPort, "LEDGER=http://localhost:"+ledgerPort, "ADMIN="+testAdminToken, "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node browser-demo.mjs: %v\n%s\ndemo:\n%s\nledger log:\n%s", err, out, demoOut.String(), h.logs.String())
	}
	t.Logf("node browser-demo.mjs:\n%s", out)
	if n := strings.Count(string(out), "ok: "); n != 4 {
		t.Fatalf("%d checks passed, want 4", n)
	}
}

// requireChromium returns the Chromium to drive: CHROMIUM, or Debian's. It
// skips the test when there is none, unless SESSIONLEDGER_REQUIRE_BROWSER
// is set, as .ci/run sets it after installing Chromium.
func requireChromium(t *testing.T) string {
	t.Helper()
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("SESSIONLEDGER_REQUIRE_BROWSER") != "" {
			t.Fatalf("Chromium is required here (SESSIONLEDGER_REQUIRE_BROWSER) but %s is missing", chromium)
		}
		t.Skipf("no Chromium at %s (apt-get install chromium, or set CHROMIUM)", chromium)
	}
	return chromium
}

// TestJSClientUnitTests runs the client's own unit tests (npm test in
// clients/js: node:test against the built dist/, with fakes of the ledger,
// Web Locks and the clock), so that the README's test command runs them.
func TestJSClientUnitTests(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("Node.js is not installed (CI installs it)")
	}
	buildJSClient(t) // npm ci, and dist/ is current
	cmd := exec.Command("npm", "test")
	cmd.Dir = filepath.Join("..", "..", "clients", "js")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm test in clients/js: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
