package hivegrid

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

func testRuntime() *runtime {
	cfg := config{name: "t", slots: 1, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return newRuntime(context.Background(), cfg, nil)
}

func addResults(rt *runtime, sizes ...int) {
	for i, size := range sizes {
		ref := &pb.AssignmentRef{RunId: "r", NodeId: string(rune('a' + i)), Attempt: 1}
		rt.addResult(keyOf(ref), &pb.Result{Ref: ref, Outcome: pb.Outcome_OUTCOME_SUCCEEDED,
			Result: []byte(`"` + strings.Repeat("x", size) + `"`)})
	}
}

func batchSizes(rt *runtime, l limits) []int {
	var sizes []int
	for m := rt.nextResults(l); m != nil; m = rt.nextResults(l) {
		sizes = append(sizes, len(m.GetResults().GetItems()))
	}
	return sizes
}

func TestResultsSplitByMaxBatch(t *testing.T) {
	rt := testRuntime()
	addResults(rt, 1, 1, 1, 1, 1)
	if got := batchSizes(rt, limits{maxBatch: 2, maxBytes: 1 << 20}); len(got) != 3 || got[0] != 2 || got[2] != 1 {
		t.Fatalf("batches %v, want [2 2 1]", got)
	}
}

func TestResultsSplitByMaxBytes(t *testing.T) {
	rt := testRuntime()
	addResults(rt, 400, 400, 400)
	if got := batchSizes(rt, limits{maxBatch: 64, maxBytes: 1000}); len(got) != 2 || got[0] != 2 || got[1] != 1 {
		t.Fatalf("batches %v, want [2 1]", got)
	}
}

func TestOversizedResultBecomesFailure(t *testing.T) {
	rt := testRuntime()
	addResults(rt, 5000)
	m := rt.nextResults(limits{maxBatch: 64, maxBytes: 1000})
	r := m.GetResults().GetItems()[0]
	if r.GetOutcome() != pb.Outcome_OUTCOME_FAILED || r.GetError().GetRetryable() ||
		!strings.Contains(r.GetError().GetMessage(), "max_message_bytes") {
		t.Fatalf("oversized result sent as %v", r)
	}
}

func TestMutationFromJSON(t *testing.T) {
	cases := map[string]func(*pb.Mutation) bool{
		`{"add_node": {"node": {"id": "n2", "agent": "echo", "input": {"x": 1}, "depends_on": ["n1"], "retry": {"max_attempts": 3, "initial_backoff_s": 0.5}}, "speculative": true}}`: func(m *pb.Mutation) bool {
			n := m.GetAddNode().GetNode()
			return string(n.GetInput()) == `{"x":1}` && n.GetDependsOn()[0] == "n1" && n.GetRetry().GetMaxAttempts() == 3 && m.GetAddNode().GetSpeculative()
		},
		`{"add_node": {"node": {"id": "n", "agent": "echo", "input": null}}}`: func(m *pb.Mutation) bool {
			return len(m.GetAddNode().GetNode().GetInput()) == 0
		},
		`{"add_edge": {"from_id": "a", "to_id": "b"}}`:    func(m *pb.Mutation) bool { return m.GetAddEdge().GetToId() == "b" },
		`{"remove_edge": {"from_id": "a", "to_id": "b"}}`: func(m *pb.Mutation) bool { return m.GetRemoveEdge().GetFromId() == "a" },
		`{"remove_node": {"id": "a"}}`:                    func(m *pb.Mutation) bool { return m.GetRemoveNode().GetId() == "a" },
		`{"modify_node": {"id": "a", "input": "s", "priority": 2, "timeout_s": 1.5}}`: func(m *pb.Mutation) bool {
			mod := m.GetModifyNode()
			return string(mod.GetInput()) == `"s"` && mod.GetPriority() == 2 && mod.GetTimeoutS() == 1.5
		},
		`{"modify_node": {"id": "a", "input": null}}`: func(m *pb.Mutation) bool {
			return m.GetModifyNode().Input != nil && len(m.GetModifyNode().Input) == 0
		},
		`{"modify_node": {"id": "a"}}`: func(m *pb.Mutation) bool { return m.GetModifyNode().Input == nil },
		`{"split_node": {"id": "s", "replacements": [{"id": "s1", "agent": "echo", "input": [1, 2]}, {"id": "s2", "agent": "echo"}]}}`: func(m *pb.Mutation) bool {
			r := m.GetSplitNode().GetReplacements()
			return len(r) == 2 && string(r[0].GetInput()) == "[1,2]"
		},
		`{"inject_before": {"target_id": "t", "node": {"id": "i", "agent": "echo", "input": 7}}}`: func(m *pb.Mutation) bool {
			return m.GetInjectBefore().GetTargetId() == "t" && string(m.GetInjectBefore().GetNode().GetInput()) == "7"
		},
		`{"prune_subgraph": {"root_id": "b"}}`: func(m *pb.Mutation) bool { return m.GetPruneSubgraph().GetRootId() == "b" },
		`{"mark_speculative": {"id": "a"}}`:    func(m *pb.Mutation) bool { return m.GetMarkSpeculative().GetId() == "a" },
		`{"confirm_speculative": {"id": "a"}}`: func(m *pb.Mutation) bool { return m.GetConfirmSpeculative().GetId() == "a" },
		`{"discard_speculative": {"id": "a"}}`: func(m *pb.Mutation) bool { return m.GetDiscardSpeculative().GetId() == "a" },
	}
	for in, check := range cases {
		m, err := mutationFromJSON([]byte(in))
		if err != nil || !check(m) {
			t.Errorf("%s: %v, %v", in, m, err)
		}
	}
	for _, bad := range []string{`[]`, `{}`, `{"a": {}, "b": {}}`, `{"teleport": {}}`, `{"add_edge": {"from": "a"}}`, `{"add_node": {"node": {"input": }}}`} {
		if _, err := mutationFromJSON([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
