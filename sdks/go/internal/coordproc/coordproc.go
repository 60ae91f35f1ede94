// Package coordproc runs the real coordinator (`python -m hivegrid.coordinator coordinator`)
// for the Go SDK's tests, on loopback with a SQLite store in the test's temporary directory,
// as tests/conformance/harness.py does. The Python comes from $HIVEGRID_PYTHON, else the
// repository's .venv; without one a test is skipped, or fails when CI=true.
package coordproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds the coordinator's start (Python imports are slow on a busy machine).
const StartTimeout = 60 * time.Second

// The timing harness.py gives the coordinator: lost workers show quickly.
const (
	heartbeatS      = "0.2"
	sessionTimeoutS = "1.5"
)

var listening = regexp.MustCompile(`hivegrid coordinator listening on (\S+)`)

// Coordinator is a running coordinator process; Kill and Restart keep its address and store.
type Coordinator struct {
	// Addr is where it listens (host:port).
	Addr string

	python, repo, store string
	mu                  sync.Mutex
	cmd                 *exec.Cmd
	exited              chan struct{}
	log                 *bytes.Buffer // stdout and stderr of every generation
}

// Start starts a coordinator for the test and stops it when the test ends.
func Start(t testing.TB) *Coordinator {
	t.Helper()
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	python := os.Getenv("HIVEGRID_PYTHON")
	if python == "" {
		python = filepath.Join(repo, ".venv", "bin", "python")
	}
	if _, err := os.Stat(python); err != nil {
		msg := fmt.Sprintf("no Python for the coordinator at %s (set HIVEGRID_PYTHON, or create the repo's .venv)", python)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := &Coordinator{python: python, repo: repo, log: &bytes.Buffer{},
		store: "sqlite:///" + filepath.Join(t.TempDir(), "hivegrid.db")}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("coordinator output:\n%s", c.output())
		}
	})
	c.start(t, "127.0.0.1:0")
	return c
}

func (c *Coordinator) start(t testing.TB, listen string) {
	t.Helper()
	cmd := exec.Command(c.python, "-m", "hivegrid.coordinator", "coordinator",
		"--listen", listen, "--store", c.store,
		"--heartbeat-interval", heartbeatS, "--session-timeout", sessionTimeoutS)
	cmd.Dir = c.repo
	pythonPath := c.repo
	if old := os.Getenv("PYTHONPATH"); old != "" {
		pythonPath += string(os.PathListSeparator) + old
	}
	cmd.Env = append(withoutEnv(os.Environ(), "HIVEGRID_COORDINATOR", "PYTHONPATH"),
		"PYTHONPATH="+pythonPath, "PYTHONUNBUFFERED=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{mu: &c.mu, w: c.log}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the coordinator: %v", err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			fmt.Fprintln(c.log, line)
			c.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()
	select {
	case c.Addr = <-addr:
	case <-exited:
		t.Fatalf("the coordinator exited before it listened:\n%s", c.output())
	case <-time.After(StartTimeout):
		t.Fatalf("the coordinator did not listen within %s:\n%s", StartTimeout, c.output())
	}
}

// Kill ends the coordinator with SIGKILL: nothing flushed that was not already durable.
func (c *Coordinator) Kill(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(StartTimeout):
		t.Fatal("the killed coordinator did not exit")
	}
}

// Restart starts a new coordinator on the same address and store (after Kill).
func (c *Coordinator) Restart(t testing.TB) {
	t.Helper()
	c.start(t, c.Addr)
}

// stop ends the current coordinator: SIGTERM, then SIGKILL if it lingers.
func (c *Coordinator) stop() {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (c *Coordinator) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// repoRoot is the nearest directory above the working directory that holds the protos.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "protos", "hivegrid", "v1", "run.proto")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("coordproc: no repository root (protos/hivegrid/v1) above the working directory")
		}
		dir = parent
	}
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
outer:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
