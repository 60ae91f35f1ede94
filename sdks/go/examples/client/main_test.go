package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hivegrid/hivegrid/sdks/go/conformance"
	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
	"github.com/hivegrid/hivegrid/sdks/go/internal/coordproc"
)

// runMain makes the test binary run the example's main instead of the tests, so that the
// test runs the program as a user would: a process with its own stdout.
const runMain = "HIVEGRID_EXAMPLE_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The example runs against the real coordinator and a Go worker, and prints every event of
// the run and each node's result.
func TestExampleProgram(t *testing.T) {
	coord := coordproc.Start(t)
	w := hivegrid.NewWorker(hivegrid.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := conformance.Register(w); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, coord.Addr) }()
	t.Cleanup(func() {
		stop()
		<-done
	})

	run, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(run, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), runMain+"=1", "HIVEGRID_COORDINATOR="+coord.Addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the example failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 4 || lines[0] != "1 run_submitted " {
		t.Fatalf("output does not start with the run's first event:\n%s", out)
	}
	want := []string{"n1 succeeded {\"value\":2}", "n2 succeeded {\"value\":3}", "n3 succeeded 5"}
	if got := lines[len(lines)-3:]; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("results %q, want %q; output:\n%s", got, want, out)
	}
	if !strings.Contains(string(out), " run_ended \n") {
		t.Fatalf("no run_ended event in:\n%s", out)
	}
}
