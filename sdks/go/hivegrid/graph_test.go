package hivegrid

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGraphBuildsTheSubmitRequest(t *testing.T) {
	g := NewGraph("report")
	g.RunID, g.Limits = "r-1", RunLimits{MaxNodes: 50}
	a := g.Node("fetch", map[string]string{"url": "u"})
	b := g.Node("fetch", nil, NodeID("second"), Priority(2), Labels(map[string]string{"gpu": "1"}))
	c := g.Node("join", []int{1}, After(a, b), DependsOn("later"), Timeout(1500*time.Millisecond),
		Retry(RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Second}), CanMutate(), RunOnFailure(),
		Metadata(map[string]string{"owner": "me"}))
	req, err := g.request()
	if err != nil {
		t.Fatal(err)
	}
	if req.GetName() != "report" || req.GetRunId() != "r-1" || req.GetLimits().GetMaxNodes() != 50 || len(req.GetNodes()) != 3 {
		t.Fatalf("request %v", req)
	}
	if a.ID() != "n1" || b.ID() != "second" || c.ID() != "n3" {
		t.Fatalf("ids %s %s %s: want n1 (the coordinator's default), second, n3", a.ID(), b.ID(), c.ID())
	}
	n1, n2, n3 := req.GetNodes()[0], req.GetNodes()[1], req.GetNodes()[2]
	if string(n1.GetInput()) != `{"url":"u"}` || string(n2.GetInput()) != "null" || n2.GetPriority() != 2 || n2.GetLabels()["gpu"] != "1" {
		t.Fatalf("nodes %v %v", n1, n2)
	}
	if !slices.Equal(n3.GetDependsOn(), []string{"n1", "second", "later"}) || n3.GetTimeoutS() != 1.5 ||
		n3.GetRetry().GetMaxAttempts() != 3 || n3.GetRetry().GetInitialBackoffS() != 1 || !n3.GetCanMutate() ||
		!n3.GetRunOnFailure() || n3.GetMetadata()["owner"] != "me" {
		t.Fatalf("node %v", n3)
	}
}

func TestGraphMistakesAreKeptForSubmit(t *testing.T) {
	other := NewGraph("other").Node("x", nil)
	cases := []struct {
		want  string
		build func(g *Graph)
	}{
		{"used by another node", func(g *Graph) { g.Node("a", nil, NodeID("k")); g.Node("b", nil, NodeID("k")) }},
		{"node 2 (n2): the id is used", func(g *Graph) { g.Node("a", nil, NodeID("n2")); g.Node("b", nil) }},
		{"belongs to another", func(g *Graph) { g.Node("a", nil, After(other)) }},
		{"a nil node", func(g *Graph) { g.Node("a", nil, After(nil)) }},
		{"input is not JSON", func(g *Graph) { g.Node("a", make(chan int)) }},
		{"no agent", func(g *Graph) { g.Node("", nil) }},
		{"empty id", func(g *Graph) { g.Node("a", nil, NodeID("")) }},
		{"negative duration", func(g *Graph) { g.Node("a", nil, Timeout(-time.Second)) }},
		{`graph "g" has no nodes`, func(*Graph) {}},
	}
	for _, tc := range cases {
		g := NewGraph("g")
		tc.build(g)
		if _, err := g.request(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: request() returned %v", tc.want, err)
		}
	}
	// The first mistake wins, and names its node.
	g := NewGraph("g")
	g.Node("", nil)
	g.Node("a", make(chan int))
	if err := g.Err(); err == nil || !strings.Contains(err.Error(), "node 1 (n1): no agent") {
		t.Fatalf("Err() = %v", err)
	}
}
