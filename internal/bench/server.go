package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Target is a ledger under load: its base URL, admin token, and the process
// whose CPU is read at phase boundaries (PID 0: CPU is not reported).
type Target struct {
	URL, AdminToken string
	PID             int
}

// Server is "sessionledger serve" run as a child process on a temporary
// data dir, with embedded NATS and no NATS listener, so that its CPU (the
// ledger's and nats-server's) is measured apart from the load generator's.
type Server struct {
	Target
	Args []string // the serve flags it was started with
	cmd  *exec.Cmd
	dir  string
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit, once done
}

// StartServer runs binary with "serve" and extra flags, and returns once the
// ledger answers /readyz with 200. Its environment holds no SESSIONLEDGER_*
// variable but the admin token, so every setting comes from the flags.
// Snapshots are off (--snapshot-interval 0): one written in the middle of a
// phase would count as CPU spent on that phase's requests. Its log (warnings
// and errors) goes to a file in the data dir's parent.
func StartServer(ctx context.Context, binary string, extra ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "sessionledger-bench")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, done: make(chan struct{})}
	port, err := freePort()
	if err != nil {
		s.remove()
		return nil, err
	}
	s.URL = "http://127.0.0.1:" + port
	s.AdminToken = randomHex(24)
	s.Args = append([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--http-addr", "127.0.0.1:" + port,
		"--nats-listen=", "--log-level", "warn", "--snapshot-interval", "0"}, extra...)
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		s.remove()
		return nil, err
	}
	defer logFile.Close()
	s.cmd = exec.Command(binary, s.Args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONLEDGER_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Env = append(s.cmd.Env, "SESSIONLEDGER_ADMIN_TOKEN="+s.AdminToken)
	stopWithParent(s.cmd)
	if err := s.cmd.Start(); err != nil {
		s.remove()
		return nil, fmt.Errorf("bench: start %s: %w", binary, err)
	}
	s.PID = s.cmd.Process.Pid
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, 2*time.Minute); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// waitReady polls /readyz until it answers 200, the process exits, or timeout.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("bench: the ledger exited before it was ready (%v); its log:\n%s", s.err, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: the ledger was not ready after %v; its log:\n%s", timeout, s.logTail())
		}
	}
}

// LogLines is how many lines the ledger has logged (warnings and errors).
func (s *Server) LogLines() int {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return bytes.Count(b, []byte("\n"))
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(b[max(0, len(b)-4096):])
}

// Close stops the ledger (SIGTERM, then SIGKILL after 20 s) and removes its
// data dir.
func (s *Server) Close() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.remove()
}

func (s *Server) remove() { _ = os.RemoveAll(s.dir) }

// freePort returns a loopback port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CPUSource says how server CPU is measured, for the reports.
const CPUSource = "utime+stime of the ledger process from /proc/<pid>/stat (Linux; 10 ms ticks), sampled at phase boundaries"

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ProcessCPU returns the CPU time (user and system, all threads) that
// process pid has used so far, from /proc/<pid>/stat. Linux only.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: server CPU: %w", err)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces and parentheses itself, so fields are counted from the
// last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bench: server CPU: /proc/<pid>/stat has no command name")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("bench: server CPU: /proc/<pid>/stat is too short")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bench: server CPU: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
