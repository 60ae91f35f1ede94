package conformance

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
	fc "github.com/hivegrid/hivegrid/sdks/go/internal/fakecoord"
)

// session starts a worker with the conformance agents and returns its welcomed session.
func session(t *testing.T) *fc.Session {
	t.Helper()
	c := fc.Start(t)
	w := hivegrid.NewWorker(hivegrid.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), hivegrid.WithSlots(8))
	if err := Register(w); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = w.Run(ctx, c.Addr) }()
	s := c.NextSession(t)
	s.Welcome(nil)
	return s
}

// run assigns one node and returns its result.
func run(t *testing.T, s *fc.Session, a *pb.Assignment) *pb.Result {
	t.Helper()
	s.Assign(a)
	res, _ := s.Results(t, 1)
	return res[0]
}

func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("result %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation %q", want)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("result %s, want %s", got, want)
	}
}

func succeeded(t *testing.T, r *pb.Result, want string) {
	t.Helper()
	if r.GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v: %v", r.GetOutcome(), r.GetError())
	}
	assertJSON(t, r.GetResult(), want)
}

func TestEchoValueSum(t *testing.T) {
	s := session(t)
	ref := func(id string) *pb.AssignmentRef { return fc.Ref("r", id, 1, 1) }
	succeeded(t, run(t, s, fc.Assignment(ref("e"), "echo", `{"a":[1,2]}`, fc.Dep("d1", `{"x":1}`), fc.Dep("d2", `3`))),
		`{"input": {"a": [1, 2]}, "deps": {"d1": {"x": 1}, "d2": 3}}`)
	succeeded(t, run(t, s, fc.Assignment(ref("e0"), "echo", "")), `{"input": null, "deps": {}}`)
	succeeded(t, run(t, s, fc.Assignment(ref("v"), "value", `{"value": 2.5}`)), `{"value": 2.5}`)

	r := run(t, s, fc.Assignment(ref("s"), "sum", "null",
		fc.Dep("a", `{"value": 2, "flag": true, "nested": {"v": 100}, "s": "9"}`), fc.Dep("b", `4`), fc.Dep("c", `null`), fc.Dep("d", `[5]`)))
	if string(r.GetResult()) != "6" {
		t.Fatalf("integer sum is %s, want 6", r.GetResult())
	}
	r = run(t, s, fc.Assignment(ref("sf"), "sum", "null", fc.Dep("a", `{"value": 1.5}`), fc.Dep("b", `2`)))
	succeeded(t, r, `3.5`)
	r = run(t, s, fc.Assignment(ref("sbig"), "sum", "null", fc.Dep("a", `9007199254740993`), fc.Dep("b", `1`)))
	if string(r.GetResult()) != "9007199254740994" {
		t.Fatalf("big integer sum is %s", r.GetResult())
	}
	if r = run(t, s, fc.Assignment(ref("s0"), "sum", "")); string(r.GetResult()) != "0" {
		t.Fatalf("empty sum is %s", r.GetResult())
	}
}

func TestFailAndFlaky(t *testing.T) {
	s := session(t)
	r := run(t, s, fc.Assignment(fc.Ref("r", "f", 1, 1), "fail", `{"message": "nope", "retryable": false}`))
	if e := r.GetError(); r.GetOutcome() != pb.Outcome_OUTCOME_FAILED || e.GetMessage() != "nope" || e.GetRetryable() || e.GetKind() != "agent" {
		t.Fatalf("fail: %v", r)
	}
	r = run(t, s, fc.Assignment(fc.Ref("r", "f2", 1, 1), "fail", `{"message": "again", "retryable": true}`))
	if !r.GetError().GetRetryable() {
		t.Fatalf("fail retryable: %v", r)
	}
	for attempt := uint32(1); attempt <= 3; attempt++ {
		r = run(t, s, fc.Assignment(fc.Ref("r", "fl", attempt, uint64(attempt)), "flaky", `{"fail_times": 2}`))
		if attempt <= 2 {
			want := "flaky failure on attempt " + string(rune('0'+attempt))
			if e := r.GetError(); r.GetOutcome() != pb.Outcome_OUTCOME_FAILED || !e.GetRetryable() || e.GetMessage() != want || e.GetKind() != "agent" {
				t.Fatalf("flaky attempt %d: %v", attempt, r)
			}
			continue
		}
		succeeded(t, r, `{"attempt": 3}`)
	}
}

func TestSleepAndCancel(t *testing.T) {
	s := session(t)
	succeeded(t, run(t, s, fc.Assignment(fc.Ref("r", "s", 1, 1), "sleep", `{"seconds": 0.01}`)), `{"slept": 0.01}`)
	ref := fc.Ref("r", "long", 1, 2)
	s.Assign(fc.Assignment(ref, "sleep", `{"seconds": 3600}`))
	s.Cancel(ref)
	res, _ := s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_CANCELLED {
		t.Fatalf("cancelled sleep: %v", res[0])
	}
}

func TestProgress(t *testing.T) {
	s := session(t)
	s.Assign(fc.Assignment(fc.Ref("r", "p", 1, 1), "progress", `{"steps": 5}`))
	step := 1
	for {
		m := s.Next(t)
		if r := m.GetResults(); r != nil {
			succeeded(t, r.GetItems()[0], `{"steps": 5}`)
			if step != 6 {
				t.Fatalf("result after %d progress items", step-1)
			}
			return
		}
		for _, p := range m.GetProgress().GetItems() {
			assertJSON(t, p.GetData(), `{"step": `+string(rune('0'+step))+`}`)
			step++
		}
	}
}

func TestSpawn(t *testing.T) {
	s := session(t)
	r := run(t, s, fc.Assignment(fc.Ref("r", "sp", 1, 1), "spawn", `{"count": 3, "child_agent": "value", "child_input": {"value": 2}}`))
	succeeded(t, r, `{"spawned": 3}`)
	m := r.GetMutations()
	if len(m) != 4 {
		t.Fatalf("%d mutations, want 4", len(m))
	}
	for i, want := range []string{"sp/c0", "sp/c1", "sp/c2"} {
		n := m[i].GetAddNode().GetNode()
		if n.GetId() != want || n.GetAgent() != "value" || !n.GetCanMutate() || len(n.GetDependsOn()) != 0 {
			t.Fatalf("child %d: %v", i, n)
		}
		assertJSON(t, n.GetInput(), `{"value": 2}`)
	}
	join := m[3].GetAddNode().GetNode()
	if join.GetId() != "sp/join" || join.GetAgent() != "sum" || !reflect.DeepEqual(join.GetDependsOn(), []string{"sp/c0", "sp/c1", "sp/c2"}) {
		t.Fatalf("join: %v", join)
	}
	assertJSON(t, join.GetInput(), "null")

	r = run(t, s, fc.Assignment(fc.Ref("r", "sd", 1, 1), "spawn", `{"count": 1}`))
	child := r.GetMutations()[0].GetAddNode().GetNode()
	if child.GetAgent() != "echo" {
		t.Fatalf("default child agent %q", child.GetAgent())
	}
	assertJSON(t, child.GetInput(), "null")
}

func TestMutate(t *testing.T) {
	s := session(t)
	r := run(t, s, fc.Assignment(fc.Ref("r", "m", 1, 1), "mutate",
		`{"mutations": [{"add_node": {"node": {"id": "n2", "agent": "echo", "input": {"x": 1}, "depends_on": ["n1"]}}}, {"prune_subgraph": {"root_id": "b"}}]}`))
	succeeded(t, r, `{}`)
	if len(r.GetMutations()) != 2 || string(r.GetMutations()[0].GetAddNode().GetNode().GetInput()) != `{"x":1}` ||
		r.GetMutations()[1].GetPruneSubgraph().GetRootId() != "b" {
		t.Fatalf("mutations %v", r.GetMutations())
	}
	r = run(t, s, fc.Assignment(fc.Ref("r", "bad", 1, 1), "mutate", `{"mutations": [{"explode": {}}]}`))
	if r.GetOutcome() != pb.Outcome_OUTCOME_FAILED || r.GetError().GetRetryable() {
		t.Fatalf("malformed mutation: %v", r)
	}
}

func TestCrashAndUnknownAgent(t *testing.T) {
	codes := make(chan int, 1)
	exit = func(code int) { codes <- code }
	t.Cleanup(func() { exit = os.Exit })
	s := session(t)
	s.Assign(fc.Assignment(fc.Ref("r", "c", 1, 1), "crash", "{}"))
	select {
	case code := <-codes:
		if code != 1 {
			t.Fatalf("crash exit code %d", code)
		}
	case <-time.After(fc.Timeout):
		t.Fatal("crash did not exit")
	}
	s.Results(t, 1) // the stubbed exit returned, so the agent reports a failure
	r := run(t, s, fc.Assignment(fc.Ref("r", "u", 1, 1), "nope", "{}"))
	if r.GetOutcome() != pb.Outcome_OUTCOME_FAILED || r.GetError().GetKind() != "unknown_agent" || r.GetError().GetRetryable() {
		t.Fatalf("unknown agent: %v", r)
	}
}
