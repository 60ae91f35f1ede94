package hivegrid_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hivegrid/hivegrid/sdks/go/conformance"
	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
	"github.com/hivegrid/hivegrid/sdks/go/internal/coordproc"
)

// clientTimeout bounds each test against the real coordinator.
const clientTimeout = 120 * time.Second

// serveWorker runs a Go worker with the conformance agents (and extra ones) against addr
// until the test ends, then drains it.
func serveWorker(t *testing.T, addr string, extra map[string]hivegrid.AgentFunc, opts ...hivegrid.Option) {
	t.Helper()
	w := hivegrid.NewWorker(append([]hivegrid.Option{hivegrid.WithLogger(quiet), hivegrid.WithName("go-client-test")}, opts...)...)
	if err := conformance.Register(w); err != nil {
		t.Fatal(err)
	}
	for name, fn := range extra {
		if err := w.Register(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, addr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the worker did not drain")
		}
	})
}

func dial(t *testing.T, addr string) *hivegrid.Client {
	t.Helper()
	c, err := hivegrid.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func jsonEqual(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// collect reads a whole watch.
func collect(t *testing.T, c *hivegrid.Client, ctx context.Context, runID string, after uint64) []hivegrid.Event {
	t.Helper()
	var events []hivegrid.Event
	for ev, err := range c.Watch(ctx, runID, after) {
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		events = append(events, ev)
	}
	return events
}

// checkGapless fails unless the events are numbered first, first+1, ... with no repeat.
func checkGapless(t *testing.T, events []hivegrid.Event, first uint64) {
	t.Helper()
	for i, ev := range events {
		if ev.Seq != first+uint64(i) {
			t.Fatalf("event %d has seq %d, want %d (a gap or a repeat): %v", i, ev.Seq, first+uint64(i), events)
		}
	}
}

// A graph built in code runs on a Go worker of the real coordinator; the client watches its
// events, waits for it and reads the results, by handle.
func TestClientSubmitWatchWait(t *testing.T) {
	coord := coordproc.Start(t)
	serveWorker(t, coord.Addr, nil)
	c := dial(t, coord.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()

	g := hivegrid.NewGraph("go-client")
	a := g.Node("value", map[string]int{"value": 2})
	b := g.Node("value", map[string]int{"value": 3})
	total := g.Node("sum", nil, hivegrid.After(a, b))
	last := g.Node("echo", "hi", hivegrid.After(total), hivegrid.NodeID("last"), hivegrid.Timeout(time.Minute))
	runID, err := c.Submit(ctx, g)
	if err != nil {
		t.Fatal(err)
	}

	events := collect(t, c, ctx, runID, 0)
	checkGapless(t, events, 1)
	if events[0].Kind != hivegrid.EventRunSubmitted {
		t.Fatalf("first event %v, want run_submitted", events[0])
	}
	end := events[len(events)-1]
	if end.Kind != hivegrid.EventRunEnded || end.RunState != hivegrid.RunSucceeded {
		t.Fatalf("last event %+v, want run_ended succeeded", end)
	}
	finished := map[string]hivegrid.Event{}
	for _, ev := range events {
		if ev.Kind == hivegrid.EventAttemptFinished {
			finished[ev.NodeID] = ev
		}
		if ev.Kind == hivegrid.EventNodeDispatched && ev.Worker != "go-client-test" {
			t.Fatalf("dispatched to %q: %+v", ev.Worker, ev)
		}
	}
	if len(finished) != 4 || finished["n3"].Outcome != "succeeded" {
		t.Fatalf("attempt_finished events %v", finished)
	}
	jsonEqual(t, finished["n3"].Result, "5")

	// A watch from the middle yields the rest only.
	tail := collect(t, c, ctx, runID, events[2].Seq)
	checkGapless(t, tail, events[3].Seq)
	if len(tail) != len(events)-3 {
		t.Fatalf("watch after seq %d gave %d events, want %d", events[2].Seq, len(tail), len(events)-3)
	}

	run, err := c.Wait(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if run.ID != runID || run.Name != "go-client" || run.State != hivegrid.RunSucceeded || run.LastSeq != end.Seq ||
		run.EndedAt.Before(run.CreatedAt) || run.CreatedAt.IsZero() {
		t.Fatalf("run %+v", run)
	}
	ids := make([]string, 0, len(run.Nodes))
	for _, n := range run.Nodes {
		ids = append(ids, n.ID)
		if n.State != hivegrid.NodeSucceeded || n.Attempts != 1 || n.Error != "" {
			t.Fatalf("node %+v", n)
		}
	}
	if !slices.Equal(ids, []string{a.ID(), b.ID(), total.ID(), last.ID()}) || a.ID() != "n1" || last.ID() != "last" {
		t.Fatalf("node ids %v", ids)
	}
	jsonEqual(t, run.Node(a.ID()).Result, `{"value": 2}`)
	jsonEqual(t, run.Node(total.ID()).Result, "5")
	jsonEqual(t, run.Node(last.ID()).Result, `{"input": "hi", "deps": {"n3": 5}}`)
	if deps := run.Node(total.ID()).DependsOn; !slices.Equal(deps, []string{"n1", "n2"}) {
		t.Fatalf("sum depends on %v", deps)
	}

	got, err := c.Get(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, run) {
		t.Fatalf("Get %+v differs from Wait %+v", got, run)
	}
}

// Get fetches every page of a run that has more nodes than one page holds.
func TestClientGetFetchesAllPages(t *testing.T) {
	coord := coordproc.Start(t)
	serveWorker(t, coord.Addr, nil)
	c := dial(t, coord.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	// spawn adds 1,200 children and a join: more than the coordinator's default page.
	g := hivegrid.NewGraph("pages")
	g.Node("spawn", map[string]any{"count": 1200, "child_agent": "value", "child_input": map[string]int{"value": 1}},
		hivegrid.CanMutate())
	g.Limits = hivegrid.RunLimits{MaxNodes: 2000}
	runID, err := c.Submit(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.Wait(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != hivegrid.RunSucceeded || len(run.Nodes) != 1202 {
		t.Fatalf("run %s with %d nodes, want succeeded with 1202", run.State, len(run.Nodes))
	}
	seen := map[string]bool{}
	for _, n := range run.Nodes {
		if seen[n.ID] {
			t.Fatalf("node %s on two pages", n.ID)
		}
		seen[n.ID] = true
	}
	jsonEqual(t, run.Node("n1/join").Result, "1200")
}

// Cancelling a run cancels its running node on the worker, which answers at once and frees
// its only slot for the next run.
func TestClientCancel(t *testing.T) {
	coord := coordproc.Start(t)
	serveWorker(t, coord.Addr, nil, hivegrid.WithSlots(1))
	c := dial(t, coord.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()

	g := hivegrid.NewGraph("to-cancel")
	slow := g.Node("sleep", map[string]int{"seconds": 3600})
	g.Node("echo", nil, hivegrid.After(slow))
	runID, err := c.Submit(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	for ev, err := range c.Watch(ctx, runID, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == hivegrid.EventNodeDispatched {
			break // the worker holds it: the cancel must reach the agent
		}
	}
	state, err := c.Cancel(ctx, runID, "enough")
	if err != nil || state != hivegrid.RunCancelled {
		t.Fatalf("Cancel: %s, %v", state, err)
	}
	run, err := c.Wait(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != hivegrid.RunCancelled || run.Node(slow.ID()).State != hivegrid.NodeCancelled {
		t.Fatalf("cancelled run %+v", run)
	}
	if state, err := c.Cancel(ctx, runID, "again"); err != nil || state != hivegrid.RunCancelled {
		t.Fatalf("second Cancel: %s, %v", state, err)
	}

	next := hivegrid.NewGraph("after")
	next.Node("value", map[string]int{"value": 1})
	nextID, err := c.Submit(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if run, err := c.Wait(ctx, nextID); err != nil || run.State != hivegrid.RunSucceeded {
		t.Fatalf("the run after the cancel: %v, %v", run, err)
	}
}

// A watch survives a coordinator restart: it resumes after the last event it yielded, so the
// events arrive once each, with no gap, to the end of the run.
func TestClientWatchResumesAcrossCoordinatorRestart(t *testing.T) {
	coord := coordproc.Start(t)
	release := make(chan struct{})
	serveWorker(t, coord.Addr, map[string]hivegrid.AgentFunc{
		"gate": func(ctx context.Context, n *hivegrid.Node) (any, error) {
			select {
			case <-release:
				return "through", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
	c := dial(t, coord.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()

	g := hivegrid.NewGraph("restart")
	gate := g.Node("gate", nil)
	g.Node("echo", nil, hivegrid.After(gate))
	runID, err := c.Submit(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	type item struct {
		ev  hivegrid.Event
		err error
	}
	items := make(chan item, 100)
	go func() {
		defer close(items)
		for ev, err := range c.Watch(ctx, runID, 0) {
			items <- item{ev, err}
		}
	}()
	var events []hivegrid.Event
	next := func() hivegrid.Event {
		select {
		case it, ok := <-items:
			if !ok {
				t.Fatalf("the watch ended after %v", events)
			}
			if it.err != nil {
				t.Fatalf("watch: %v", it.err)
			}
			events = append(events, it.ev)
			return it.ev
		case <-ctx.Done():
			t.Fatalf("no event after %v", events)
			return hivegrid.Event{}
		}
	}
	for next().Kind != hivegrid.EventNodeDispatched {
	}
	before := len(events)
	coord.Kill(t)
	coord.Restart(t)
	close(release)
	for next().Kind != hivegrid.EventRunEnded {
	}
	if _, ok := <-items; ok {
		t.Fatal("events after run_ended")
	}
	checkGapless(t, events, 1)
	if len(events) <= before {
		t.Fatalf("no event after the restart: %v", events)
	}
	if end := events[len(events)-1]; end.RunState != hivegrid.RunSucceeded {
		t.Fatalf("run ended %v", end)
	}
}

// Mistakes come back as errors that say what, and errors.Is tells the kind.
func TestClientErrors(t *testing.T) {
	coord := coordproc.Start(t)
	c := dial(t, coord.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	if _, err := c.Get(ctx, "no-such-run"); !errors.Is(err, hivegrid.ErrNotFound) {
		t.Fatalf("Get of an unknown run: %v", err)
	}
	for ev, err := range c.Watch(ctx, "no-such-run", 0) {
		if !errors.Is(err, hivegrid.ErrNotFound) {
			t.Fatalf("Watch of an unknown run: %+v, %v", ev, err)
		}
	}
	g := hivegrid.NewGraph("bad")
	g.Node("echo", nil, hivegrid.DependsOn("missing"))
	if _, err := c.Submit(ctx, g); !errors.Is(err, hivegrid.ErrInvalid) {
		t.Fatalf("Submit of a graph with an unknown dependency: %v", err)
	}
	if _, err := c.Submit(ctx, hivegrid.NewGraph("empty")); err == nil {
		t.Fatal("Submit of an empty graph succeeded")
	}
}
