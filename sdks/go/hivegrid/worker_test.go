package hivegrid_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
	fc "github.com/hivegrid/hivegrid/sdks/go/internal/fakecoord"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// idle is an agent for tests that assign it nothing.
func idle(context.Context, *hivegrid.Node) (any, error) { return nil, nil }

// running is a Worker.Run in progress.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func startWorker(t *testing.T, c *fc.Coordinator, agents map[string]hivegrid.AgentFunc, opts ...hivegrid.Option) *running {
	t.Helper()
	w := hivegrid.NewWorker(append([]hivegrid.Option{hivegrid.WithLogger(quiet), hivegrid.WithName("test")}, opts...)...)
	for name, fn := range agents {
		if err := w.Register(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx, c.Addr) }()
	t.Cleanup(cancel)
	return r
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(fc.Timeout):
		t.Fatal("Run did not return")
		return nil
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(fc.Timeout):
		t.Fatal("timed out waiting on a channel")
	}
	var zero T
	return zero
}

// gated returns an agent that reports each start on started and returns {"node": id} once
// its node's gate (made on first use) is closed.
type gates struct {
	mu      sync.Mutex
	byNode  map[string]chan struct{}
	started chan string
	live    atomic.Int32
	maxLive atomic.Int32
}

func newGates() *gates {
	return &gates{byNode: map[string]chan struct{}{}, started: make(chan string, 100)}
}

func (g *gates) gate(node string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byNode[node] == nil {
		g.byNode[node] = make(chan struct{})
	}
	return g.byNode[node]
}

func (g *gates) open(node string) { close(g.gate(node)) }

func (g *gates) agent(ctx context.Context, n *hivegrid.Node) (any, error) {
	live := g.live.Add(1)
	defer g.live.Add(-1)
	for {
		m := g.maxLive.Load()
		if live <= m || g.maxLive.CompareAndSwap(m, live) {
			break
		}
	}
	g.started <- n.NodeID
	select {
	case <-g.gate(n.NodeID):
		return map[string]string{"node": n.NodeID}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestHandshake(t *testing.T) {
	c := fc.Start(t)
	sessions := make(chan string, 1)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"b": idle, "a": idle},
		hivegrid.WithSlots(3), hivegrid.WithLabels(map[string]string{"gpu": "1"}),
		hivegrid.WithOnConnect(func(id string) { sessions <- id }))
	s := c.NextSession(t)
	h := s.Hello
	if h == nil {
		t.Fatal("first message is not Hello")
	}
	if h.GetWorkerName() != "test" || h.GetLanguage() != "go" || h.GetSdkVersion() != "0.1.0" ||
		h.GetProtocolVersion() != 2 || h.GetSlots() != 3 || h.GetLabels()["gpu"] != "1" ||
		!slices.Equal(h.GetAgents(), []string{"a", "b"}) || len(h.GetHeld()) != 0 {
		t.Fatalf("unexpected hello: %v", h)
	}
	s.Welcome(&pb.Welcome{SessionId: "sess-42", HeartbeatIntervalS: 30})
	if got := recv(t, sessions); got != "sess-42" {
		t.Fatalf("OnConnect got %q", got)
	}
}

func TestRefusalStopsRun(t *testing.T) {
	c := fc.Start(t)
	r := startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle})
	c.NextSession(t).Refuse("protocol version 1 unsupported")
	var refused *hivegrid.RefusedError
	if err := r.wait(t); !errors.As(err, &refused) || refused.Reason != "protocol version 1 unsupported" {
		t.Fatalf("Run returned %v, want RefusedError", err)
	}
}

func TestNoAgents(t *testing.T) {
	if err := hivegrid.NewWorker().Run(context.Background(), "127.0.0.1:1"); err == nil {
		t.Fatal("Run without agents succeeded")
	}
}

func TestSlotsRespected(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent}, hivegrid.WithSlots(2))
	s := c.NextSession(t)
	s.Welcome(nil)
	// A coordinator that over-assigns: the worker must still run only 2 at once.
	var refs []*pb.AssignmentRef
	var items []*pb.Assignment
	for _, id := range []string{"n1", "n2", "n3", "n4"} {
		ref := fc.Ref("r", id, 1, 1)
		refs = append(refs, ref)
		items = append(items, fc.Assignment(ref, "gate", "null"))
	}
	s.Assign(items...)
	first := []string{recv(t, g.started), recv(t, g.started)}
	slices.Sort(first)
	if !slices.Equal(first, []string{"n1", "n2"}) {
		t.Fatalf("started %v first, want n1 and n2 (assignment order)", first)
	}
	g.open("n1")
	if res, _ := s.Results(t, 1); res[0].GetRef().GetNodeId() != "n1" {
		t.Fatalf("unexpected result %v", res[0])
	}
	if got := recv(t, g.started); got != "n3" {
		t.Fatalf("started %s after n1 finished, want n3", got)
	}
	g.open("n2")
	g.open("n3")
	if got := recv(t, g.started); got != "n4" {
		t.Fatalf("started %s, want n4", got)
	}
	g.open("n4")
	s.Results(t, 3)
	if m := g.maxLive.Load(); m > 2 {
		t.Fatalf("%d agents ran at once with 2 slots", m)
	}
}

// A worker that reconnects lists what it holds in Hello.held, re-sends unacked results in as
// few messages as max_batch allows, and forgets a result once it is acked.
func TestUnackedResultsResentInBatchesAfterReconnect(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent})
	s := c.NextSession(t)
	s.Welcome(nil)
	refs := []*pb.AssignmentRef{fc.Ref("r", "a", 1, 10), fc.Ref("r", "b", 1, 11), fc.Ref("r", "c", 2, 12)}
	for _, ref := range refs {
		s.Assign(fc.Assignment(ref, "gate", "null"))
		recv(t, g.started)
		g.open(ref.GetNodeId())
		s.Results(t, 1) // before the next assignment, so that the finish order is refs' order
	}
	s.Kill()

	s = c.NextSession(t)
	if got := heldNodes(s.Hello); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("held %v, want a b c", got)
	}
	s.Welcome(nil)
	res, msgs := s.Results(t, 3)
	if msgs != 1 {
		t.Fatalf("3 ready results re-sent in %d messages, want 1", msgs)
	}
	for i, r := range res {
		if r.GetRef().GetNodeId() != refs[i].GetNodeId() || r.GetRef().GetLease() != refs[i].GetLease() {
			t.Fatalf("result %d is %v, want ref %v (finish order)", i, r.GetRef(), refs[i])
		}
	}
	s.Kill()

	s = c.NextSession(t)
	s.Welcome(&pb.Welcome{SessionId: "s3", HeartbeatIntervalS: 30, MaxBatch: 2})
	first, _ := s.Results(t, 2)
	second, _ := s.Results(t, 1)
	if len(first) != 2 || len(second) != 1 {
		t.Fatalf("with max_batch 2 got batches of %d and %d", len(first), len(second))
	}
	s.Push(&pb.Push{Acks: append(fc.Acks(pb.AckStatus_ACK_STATUS_COMMITTED, refs[0], refs[1]),
		fc.Acks(pb.AckStatus_ACK_STATUS_STALE, refs[2])...)})
	// A message after the acks proves they were processed: the heartbeat-free way is a
	// DrainRequest, which makes the worker send Drain and then half-close (nothing held).
	s.RequestDrain()
	if m := s.Next(t); m.GetDrain() == nil {
		t.Fatalf("expected Drain, got %v", m)
	}
	s.AwaitHalfClose(t)
}

func TestReconnectHoldsRunningAndResendsUnacked(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent})
	s := c.NextSession(t)
	s.Welcome(nil)
	done, busy := fc.Ref("r", "done", 1, 1), fc.Ref("r", "busy", 1, 2)
	s.Assign(fc.Assignment(done, "gate", "null"), fc.Assignment(busy, "gate", "null"))
	recv(t, g.started)
	recv(t, g.started)
	g.open("done")
	s.Results(t, 1)
	s.Kill()

	s = c.NextSession(t)
	if held := heldNodes(s.Hello); !slices.Equal(held, []string{"busy", "done"}) {
		t.Fatalf("held %v, want busy and done", held)
	}
	s.Welcome(nil)
	if res, _ := s.Results(t, 1); res[0].GetRef().GetNodeId() != "done" {
		t.Fatalf("re-sent %v, want done", res[0].GetRef())
	}
	g.open("busy")
	if res, _ := s.Results(t, 1); res[0].GetRef().GetNodeId() != "busy" ||
		string(res[0].GetResult()) != `{"node":"busy"}` {
		t.Fatalf("unexpected result %v", res[0])
	}
}

func TestCancelReachesAgent(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	cancelled := make(chan error, 1)
	stubborn := func(ctx context.Context, n *hivegrid.Node) (any, error) {
		<-ctx.Done()
		return "finished anyway", nil
	}
	startWorker(t, c, map[string]hivegrid.AgentFunc{
		"wait": func(ctx context.Context, n *hivegrid.Node) (any, error) {
			g.started <- n.NodeID
			<-ctx.Done()
			cancelled <- ctx.Err()
			return nil, ctx.Err()
		},
		"stubborn": stubborn,
	})
	s := c.NextSession(t)
	s.Welcome(nil)
	ref := fc.Ref("r", "n", 1, 5)
	s.Assign(fc.Assignment(ref, "wait", "null"))
	recv(t, g.started)
	s.Cancel(ref)
	if err := recv(t, cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("agent context ended with %v", err)
	}
	res, _ := s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_CANCELLED || res[0].GetRef().GetLease() != 5 ||
		res[0].GetError().GetKind() != "cancelled" || res[0].GetError().GetMessage() != "cancelled: run_cancelled" {
		t.Fatalf("answer to cancel: %v", res[0])
	}

	// An agent that succeeds despite the cancel reports its real result.
	ref2 := fc.Ref("r", "m", 1, 6)
	s.Assign(fc.Assignment(ref2, "stubborn", "null"))
	s.Cancel(ref2)
	res, _ = s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED || string(res[0].GetResult()) != `"finished anyway"` {
		t.Fatalf("stubborn agent: %v", res[0])
	}
}

// One Push carries an ack, cancels and an assignment. The worker must handle all three lists,
// in the protocol's order: acks, assignments, then cancels. So a cancel may name an
// assignment of its own Push, and cancels that one too.
func TestPushHandlesAcksThenAssignmentsThenCancels(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent})
	s := c.NextSession(t)
	s.Welcome(nil)
	done, busy, fresh := fc.Ref("r", "done", 1, 1), fc.Ref("r", "busy", 1, 2), fc.Ref("r", "fresh", 1, 3)
	s.Assign(fc.Assignment(done, "gate", "null"), fc.Assignment(busy, "gate", "null"))
	recv(t, g.started)
	recv(t, g.started)
	g.open("done")
	if res, _ := s.Results(t, 1); res[0].GetRef().GetNodeId() != "done" {
		t.Fatalf("unexpected result %v", res[0])
	}

	s.Push(&pb.Push{
		Acks:        fc.Acks(pb.AckStatus_ACK_STATUS_COMMITTED, done),
		Cancels:     fc.Cancels(busy, fresh),
		Assignments: []*pb.Assignment{fc.Assignment(fresh, "gate", "null")},
	})
	res, _ := s.Results(t, 2)
	got := map[string]pb.Outcome{}
	for _, r := range res {
		got[r.GetRef().GetNodeId()] = r.GetOutcome()
	}
	if len(got) != 2 || got["busy"] != pb.Outcome_OUTCOME_CANCELLED || got["fresh"] != pb.Outcome_OUTCOME_CANCELLED {
		t.Fatalf("answers to the cancels of busy and fresh (assigned in the cancel's Push): %v", res)
	}

	// The ack was handled: the worker forgot done, and still holds the two unacked results.
	s.Kill()
	s = c.NextSession(t)
	if held := heldNodes(s.Hello); !slices.Equal(held, []string{"busy", "fresh"}) {
		t.Fatalf("held %v after the ack of done, want busy and fresh", held)
	}
}

// The cancel/assignment order bug: a Cancel travelling in the same Push as its attempt's
// Assignment must cancel that attempt, answer OUTCOME_CANCELLED and free the slot, rather than
// find nothing to cancel and let the agent run to its end.
func TestCancelInTheAssignmentsPushCancelsIt(t *testing.T) {
	c := fc.Start(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	started := make(chan string, 4)
	startWorker(t, c, map[string]hivegrid.AgentFunc{
		// Runs until cancelled (or until the test ends: the bug would hold the slot that long).
		"long": func(ctx context.Context, n *hivegrid.Node) (any, error) {
			started <- n.NodeID
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-release:
				return "ran to the end", nil
			}
		},
		"quick": func(_ context.Context, n *hivegrid.Node) (any, error) { return n.NodeID, nil },
	}, hivegrid.WithSlots(1))
	s := c.NextSession(t)
	s.Welcome(nil)
	ref := fc.Ref("r", "long", 1, 7)
	s.Push(&pb.Push{Assignments: []*pb.Assignment{fc.Assignment(ref, "long", "null")}, Cancels: fc.Cancels(ref)})
	res, _ := s.Results(t, 1)
	if r := res[0]; r.GetRef().GetLease() != 7 || r.GetOutcome() != pb.Outcome_OUTCOME_CANCELLED ||
		r.GetError().GetKind() != "cancelled" {
		t.Fatalf("answer to an attempt cancelled in its own Push: %v", r)
	}
	// The one slot is free again: the next assignment runs.
	s.Assign(fc.Assignment(fc.Ref("r", "next", 1, 8), "quick", "null"))
	if res, _ = s.Results(t, 1); res[0].GetRef().GetNodeId() != "next" || res[0].GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED {
		t.Fatalf("assignment after the cancel: %v", res[0])
	}
}

func TestProgressInOrderBeforeResult(t *testing.T) {
	c := fc.Start(t)
	const steps = 200
	startWorker(t, c, map[string]hivegrid.AgentFunc{"p": func(ctx context.Context, n *hivegrid.Node) (any, error) {
		for i := 1; i <= steps; i++ {
			if err := n.Progress(map[string]int{"step": i}); err != nil {
				return nil, err
			}
		}
		return "ok", nil
	}})
	s := c.NextSession(t)
	s.Welcome(&pb.Welcome{SessionId: "s", HeartbeatIntervalS: 30, MaxBatch: 16})
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, 1), "p", "null"))
	next := 1
	for {
		m := s.Next(t)
		if r := m.GetResults(); r != nil {
			if next != steps+1 {
				t.Fatalf("result arrived after %d progress items, want %d", next-1, steps)
			}
			return
		}
		items := m.GetProgress().GetItems()
		if len(items) == 0 || len(items) > 16 {
			t.Fatalf("progress batch of %d items (max_batch 16): %v", len(items), m)
		}
		for _, p := range items {
			var d struct{ Step int }
			if err := json.Unmarshal(p.GetData(), &d); err != nil || d.Step != next {
				t.Fatalf("progress %s, want step %d", p.GetData(), next)
			}
			next++
		}
	}
}

func TestProgressAfterReturnFails(t *testing.T) {
	c := fc.Start(t)
	kept := make(chan *hivegrid.Node, 1)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": func(ctx context.Context, n *hivegrid.Node) (any, error) {
		kept <- n
		return nil, nil
	}})
	s := c.NextSession(t)
	s.Welcome(nil)
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, 1), "a", ""))
	s.Results(t, 1)
	if err := recv(t, kept).Progress(1); !errors.Is(err, hivegrid.ErrNodeFinished) {
		t.Fatalf("Progress after return: %v", err)
	}
}

func TestDrainOnContextCancel(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	r := startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent})
	s := c.NextSession(t)
	s.Welcome(nil)
	ref := fc.Ref("r", "n", 1, 1)
	s.Assign(fc.Assignment(ref, "gate", "null"))
	recv(t, g.started)
	r.cancel()
	if m := s.Next(t); m.GetDrain() == nil {
		t.Fatalf("expected Drain, got %v", m)
	}
	g.open("n") // the in-flight agent was not cancelled by the drain
	res, _ := s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED {
		t.Fatalf("in-flight node: %v", res[0])
	}
	s.Ack(pb.AckStatus_ACK_STATUS_COMMITTED, ref)
	s.AwaitHalfClose(t)
	s.End()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
}

func TestDrainRequestEndsRun(t *testing.T) {
	c := fc.Start(t)
	r := startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle})
	s := c.NextSession(t)
	s.Welcome(nil)
	s.RequestDrain()
	if m := s.Next(t); m.GetDrain() == nil {
		t.Fatalf("expected Drain, got %v", m)
	}
	s.AwaitHalfClose(t)
	s.End()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run after DrainRequest: %v", err)
	}
}

func TestDrainTimeout(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	r := startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent}, hivegrid.WithDrainTimeout(50*time.Millisecond))
	s := c.NextSession(t)
	s.Welcome(nil)
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, 1), "gate", "null"))
	recv(t, g.started)
	r.cancel()
	if err := r.wait(t); !errors.Is(err, hivegrid.ErrDrainTimeout) {
		t.Fatalf("Run: %v, want ErrDrainTimeout", err)
	}
}

func TestLeaseAbove2To53RoundTrips(t *testing.T) {
	c := fc.Start(t)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": func(context.Context, *hivegrid.Node) (any, error) { return 1, nil }})
	s := c.NextSession(t)
	s.Welcome(nil)
	const lease = uint64(1)<<63 + 1<<53 + 1
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, lease), "a", "null"))
	res, _ := s.Results(t, 1)
	if got := res[0].GetRef().GetLease(); got != lease {
		t.Fatalf("lease %d came back as %d", lease, got)
	}
	s.Kill()
	s = c.NextSession(t)
	if got := s.Hello.GetHeld()[0].GetLease(); got != lease {
		t.Fatalf("lease %d held as %d", lease, got)
	}
}

func TestFailures(t *testing.T) {
	c := fc.Start(t)
	startWorker(t, c, map[string]hivegrid.AgentFunc{
		"err": func(context.Context, *hivegrid.Node) (any, error) { return nil, errors.New("boom") },
		"fatal": func(context.Context, *hivegrid.Node) (any, error) {
			return nil, hivegrid.NonRetryable(errors.New("bad input"))
		},
		"panic": func(context.Context, *hivegrid.Node) (any, error) { panic("oops") },
		"unjsonable": func(context.Context, *hivegrid.Node) (any, error) {
			return func() {}, nil
		},
	})
	s := c.NextSession(t)
	s.Welcome(nil)
	for i, agent := range []string{"err", "fatal", "panic", "unjsonable", "nope"} {
		s.Assign(fc.Assignment(fc.Ref("r", agent, 1, uint64(i)), agent, "null"))
	}
	res, _ := s.Results(t, 5)
	want := map[string]struct {
		retryable bool
		kind      string
	}{
		"err": {true, "agent"}, "fatal": {false, "agent"}, "panic": {true, "agent"},
		"unjsonable": {false, "agent"}, "nope": {false, "unknown_agent"},
	}
	for _, r := range res {
		w := want[r.GetRef().GetNodeId()]
		e := r.GetError()
		if r.GetOutcome() != pb.Outcome_OUTCOME_FAILED || e.GetRetryable() != w.retryable || e.GetKind() != w.kind || e.GetMessage() == "" {
			t.Errorf("%s: %v", r.GetRef().GetNodeId(), r)
		}
	}
}

func TestHeartbeatWhenIdle(t *testing.T) {
	c := fc.Start(t)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle})
	s := c.NextSession(t)
	s.Welcome(&pb.Welcome{SessionId: "s", HeartbeatIntervalS: 0.02, SessionTimeoutS: 60})
	for range 3 {
		if m := s.NextRaw(t); m.GetHeartbeat() == nil {
			t.Fatalf("expected a heartbeat, got %v", m)
		}
	}
}

func TestSilentCoordinatorTriggersReconnect(t *testing.T) {
	c := fc.Start(t)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle})
	c.NextSession(t).Welcome(&pb.Welcome{SessionId: "s", HeartbeatIntervalS: 30, SessionTimeoutS: 0.1})
	c.NextSession(t) // the worker gave up on the silent session and came back
}

func TestMutationsSentWithResult(t *testing.T) {
	c := fc.Start(t)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"m": func(_ context.Context, n *hivegrid.Node) (any, error) {
		prio := int32(3)
		n.AddNode(hivegrid.NodeSpec{ID: "x", Agent: "echo", Input: map[string]int{"k": 1}, DependsOn: []string{"n"},
			Retry: &hivegrid.RetryPolicy{MaxAttempts: 3, InitialBackoff: 500 * time.Millisecond}, Timeout: 2 * time.Second})
		n.AddSpeculativeNode(hivegrid.NodeSpec{ID: "spec", Agent: "echo"})
		n.AddEdge("x", "y")
		n.RemoveEdge("a", "b")
		n.RemoveNode("z")
		n.ModifyNode("y", hivegrid.NodeChanges{Priority: &prio, Input: json.RawMessage("null")})
		n.SplitNode("w", hivegrid.NodeSpec{ID: "w1", Agent: "echo"}, hivegrid.NodeSpec{ID: "w2", Agent: "echo"})
		n.InjectBefore("y", hivegrid.NodeSpec{ID: "pre", Agent: "echo"})
		n.PruneSubgraph("q")
		n.MarkSpeculative("s1")
		n.ConfirmSpeculative("s2")
		n.DiscardSpeculative("s3")
		if err := n.AddMutationJSON([]byte(`{"add_edge": {"from_id": "j1", "to_id": "j2"}}`)); err != nil {
			return nil, err
		}
		if err := n.AddMutationJSON([]byte(`{"teleport": {}}`)); err == nil {
			return nil, errors.New("unknown kind accepted")
		}
		return "done", nil
	}})
	s := c.NextSession(t)
	s.Welcome(nil)
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, 1), "m", "null"))
	res, _ := s.Results(t, 1)
	muts := res[0].GetMutations()
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED || len(muts) != 13 {
		t.Fatalf("result %v", res[0])
	}
	add := muts[0].GetAddNode().GetNode()
	if string(add.GetInput()) != `{"k":1}` || add.GetRetry().GetMaxAttempts() != 3 ||
		add.GetRetry().GetInitialBackoffS() != 0.5 || add.GetTimeoutS() != 2 || add.GetDependsOn()[0] != "n" {
		t.Fatalf("add_node %v", add)
	}
	if !muts[1].GetAddNode().GetSpeculative() || muts[5].GetModifyNode().GetPriority() != 3 ||
		string(muts[5].GetModifyNode().GetInput()) != "null" || len(muts[6].GetSplitNode().GetReplacements()) != 2 ||
		muts[12].GetAddEdge().GetToId() != "j2" {
		t.Fatalf("mutations %v", muts)
	}
}

func TestUnencodableMutationInputFailsAttempt(t *testing.T) {
	c := fc.Start(t)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"m": func(_ context.Context, n *hivegrid.Node) (any, error) {
		n.AddNode(hivegrid.NodeSpec{ID: "x", Agent: "echo", Input: make(chan int)})
		return "done", nil
	}})
	s := c.NextSession(t)
	s.Welcome(nil)
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, 1), "m", "null"))
	res, _ := s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_FAILED || res[0].GetError().GetRetryable() {
		t.Fatalf("result %v", res[0])
	}
}

func TestAgentIgnoringCancelIsAnsweredAfterGrace(t *testing.T) {
	c := fc.Start(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	startWorker(t, c, map[string]hivegrid.AgentFunc{"deaf": func(context.Context, *hivegrid.Node) (any, error) {
		<-release
		return "late", nil
	}}, hivegrid.WithCancelGrace(20*time.Millisecond))
	s := c.NextSession(t)
	s.Welcome(nil)
	ref := fc.Ref("r", "n", 1, 1)
	s.Assign(fc.Assignment(ref, "deaf", "null"))
	s.Cancel(ref)
	res, _ := s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_CANCELLED || res[0].GetError().GetKind() != "cancelled" {
		t.Fatalf("answer for a deaf agent: %v", res[0])
	}
}

func TestAttemptsNotKeptAfterReconnectAreCancelled(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent})
	s := c.NextSession(t)
	s.Welcome(nil)
	kept, lost := fc.Ref("r", "kept", 1, 1), fc.Ref("r", "lost", 1, 2)
	s.Assign(fc.Assignment(kept, "gate", "null"), fc.Assignment(lost, "gate", "null"))
	recv(t, g.started)
	recv(t, g.started)
	s.Kill()

	s = c.NextSession(t)
	if len(s.Hello.GetHeld()) != 2 {
		t.Fatalf("held %v", s.Hello.GetHeld())
	}
	s.Welcome(&pb.Welcome{SessionId: "s2", HeartbeatIntervalS: 30, Held: []*pb.AssignmentRef{kept}})
	res, _ := s.Results(t, 1)
	if res[0].GetRef().GetNodeId() != "lost" || res[0].GetOutcome() != pb.Outcome_OUTCOME_CANCELLED {
		t.Fatalf("stale attempt answered %v", res[0])
	}
	g.open("kept")
	if res, _ = s.Results(t, 1); res[0].GetRef().GetNodeId() != "kept" || res[0].GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED {
		t.Fatalf("kept attempt answered %v", res[0])
	}
}

// heldNodes lists the node ids of a Hello's held refs, sorted.
func heldNodes(h *pb.Hello) []string {
	var ids []string
	for _, r := range h.GetHeld() {
		ids = append(ids, r.GetNodeId())
	}
	slices.Sort(ids)
	return ids
}

// Welcome.held decides what survives a reconnect: a running attempt left out is cancelled
// (and answered), a queued one left out is dropped unstarted, and unacked results are sent
// again whatever the list says (their acks settle them).
func TestWelcomeHeldDecidesWhatSurvives(t *testing.T) {
	c := fc.Start(t)
	g := newGates()
	startWorker(t, c, map[string]hivegrid.AgentFunc{"gate": g.agent}, hivegrid.WithSlots(1))
	s := c.NextSession(t)
	s.Welcome(nil)
	done, busy, queued := fc.Ref("r", "done", 1, 1), fc.Ref("r", "busy", 1, 2), fc.Ref("r", "queued", 1, 3)
	s.Assign(fc.Assignment(done, "gate", "null"))
	recv(t, g.started)
	g.open("done")
	s.Results(t, 1)
	s.Assign(fc.Assignment(busy, "gate", "null"), fc.Assignment(queued, "gate", "null"))
	if got := recv(t, g.started); got != "busy" {
		t.Fatalf("started %s, want busy (one slot)", got)
	}
	s.Kill()

	s = c.NextSession(t)
	if held := heldNodes(s.Hello); !slices.Equal(held, []string{"busy", "done", "queued"}) {
		t.Fatalf("held %v, want busy, done and queued", held)
	}
	s.Welcome(&pb.Welcome{SessionId: "s2", HeartbeatIntervalS: 30, Held: []*pb.AssignmentRef{done}})
	res, _ := s.Results(t, 2)
	got := map[string]pb.Outcome{}
	for _, r := range res {
		got[r.GetRef().GetNodeId()] = r.GetOutcome()
	}
	if len(got) != 2 || got["done"] != pb.Outcome_OUTCOME_SUCCEEDED || got["busy"] != pb.Outcome_OUTCOME_CANCELLED {
		t.Fatalf("after a Welcome keeping only done: %v", res)
	}
	// The slot is free and queued is gone: the next assignment is the one that starts.
	s.Assign(fc.Assignment(fc.Ref("r", "probe", 1, 4), "gate", "null"))
	if started := recv(t, g.started); started != "probe" {
		t.Fatalf("started %s, want probe (queued was not kept)", started)
	}
}
