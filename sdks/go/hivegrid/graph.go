package hivegrid

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// Graph builds the nodes of a run in code, for Client.Submit. Dependencies are given by
// handle (After) or by id (DependsOn):
//
//	g := hivegrid.NewGraph("report")
//	a := g.Node("fetch", map[string]string{"url": u})
//	b := g.Node("summarize", nil, hivegrid.After(a), hivegrid.Timeout(time.Minute))
//
// The builder never fails on the spot: a mistake (an input that is not JSON, an id used
// twice, a handle of another graph) is kept and returned by Submit.
type Graph struct {
	// Name is the run's human name (optional).
	Name string
	// RunID is the id to give the run ("": the coordinator makes one).
	RunID string
	// Limits are the run's limits (zero fields: the coordinator's defaults).
	Limits RunLimits

	nodes []*GraphNode
	ids   map[string]bool
	err   error
}

// RunLimits are per-run limits; zero fields take the coordinator's defaults.
type RunLimits struct {
	MaxNodes      uint32
	MaxSpawnDepth uint32
}

// GraphNode is the handle of a node added to a Graph.
type GraphNode struct {
	graph *Graph
	spec  *pb.NodeSpec
}

// ID is the node's id: the one given with NodeID, else "n<position>" (n1 for the first
// node), the id the coordinator itself gives to a node submitted without one.
func (n *GraphNode) ID() string { return n.spec.GetId() }

// NodeOption sets a property of a node in Graph.Node.
type NodeOption func(*GraphNode) error

// NewGraph returns an empty graph for a run called name.
func NewGraph(name string) *Graph { return &Graph{Name: name, ids: map[string]bool{}} }

// Node adds a node that runs agent on input (encoded as JSON; a json.RawMessage is used as
// is, nil is null) and returns its handle.
func (g *Graph) Node(agent string, input any, opts ...NodeOption) *GraphNode {
	n := &GraphNode{graph: g, spec: &pb.NodeSpec{Id: fmt.Sprintf("n%d", len(g.nodes)+1), Agent: agent}}
	g.nodes = append(g.nodes, n)
	if g.ids == nil {
		g.ids = map[string]bool{}
	}
	var err error
	if n.spec.Input, err = json.Marshal(input); err != nil {
		err = fmt.Errorf("input is not JSON: %w", err)
	}
	for _, o := range opts {
		if err != nil {
			break
		}
		err = o(n)
	}
	switch {
	case err != nil:
	case agent == "":
		err = errors.New("no agent")
	case g.ids[n.spec.Id]:
		err = errors.New("the id is used by another node of the graph")
	}
	if err != nil && g.err == nil {
		g.err = fmt.Errorf("hivegrid: graph %q, node %d (%s): %w", g.Name, len(g.nodes), n.spec.Id, err)
	}
	g.ids[n.spec.Id] = true
	return n
}

// Err returns the first mistake made building the graph (Submit returns it too).
func (g *Graph) Err() error { return g.err }

func (g *Graph) request() (*pb.SubmitRunRequest, error) {
	if g.err != nil {
		return nil, g.err
	}
	if len(g.nodes) == 0 {
		return nil, fmt.Errorf("hivegrid: graph %q has no nodes", g.Name)
	}
	req := &pb.SubmitRunRequest{Name: g.Name, RunId: g.RunID}
	if g.Limits != (RunLimits{}) {
		req.Limits = &pb.RunLimits{MaxNodes: g.Limits.MaxNodes, MaxSpawnDepth: g.Limits.MaxSpawnDepth}
	}
	for _, n := range g.nodes {
		req.Nodes = append(req.Nodes, n.spec)
	}
	return req, nil
}

// NodeID gives the node an id of its own (unique in the run).
func NodeID(id string) NodeOption {
	return func(n *GraphNode) error {
		if id == "" {
			return errors.New("NodeID: empty id")
		}
		n.spec.Id = id
		return nil
	}
}

// After makes the node depend on nodes of the same graph: it runs once they succeeded.
func After(nodes ...*GraphNode) NodeOption {
	return func(n *GraphNode) error {
		for _, d := range nodes {
			switch {
			case d == nil:
				return errors.New("After: a nil node")
			case d.graph != n.graph:
				return fmt.Errorf("After: node %s belongs to another graph", d.ID())
			}
			n.spec.DependsOn = append(n.spec.DependsOn, d.ID())
		}
		return nil
	}
}

// DependsOn makes the node depend on the nodes of these ids (in the graph, or added later
// by a mutation).
func DependsOn(ids ...string) NodeOption {
	return func(n *GraphNode) error {
		n.spec.DependsOn = append(n.spec.DependsOn, ids...)
		return nil
	}
}

// Retry sets how a retryable failure or a timeout is retried.
func Retry(p RetryPolicy) NodeOption {
	return func(n *GraphNode) error {
		n.spec.Retry = p.proto()
		return nil
	}
}

// Timeout bounds each attempt, start to close.
func Timeout(d time.Duration) NodeOption {
	return func(n *GraphNode) error {
		if d < 0 {
			return fmt.Errorf("Timeout: negative duration %s", d)
		}
		n.spec.TimeoutS = d.Seconds()
		return nil
	}
}

// Priority orders ready nodes of the same agent: higher runs first.
func Priority(p int32) NodeOption {
	return func(n *GraphNode) error {
		n.spec.Priority = p
		return nil
	}
}

// Labels restricts the node to workers whose labels contain all of these.
func Labels(labels map[string]string) NodeOption {
	return func(n *GraphNode) error {
		n.spec.Labels = maps.Clone(labels)
		return nil
	}
}

// Metadata carries free-form data along with the node (agents see it as Node.Metadata).
func Metadata(m map[string]string) NodeOption {
	return func(n *GraphNode) error {
		n.spec.Metadata = maps.Clone(m)
		return nil
	}
}

// CanMutate lets the node's agent change the graph (Node.AddNode and the others).
func CanMutate() NodeOption {
	return func(n *GraphNode) error {
		n.spec.CanMutate = true
		return nil
	}
}

// RunOnFailure runs the node even when a dependency failed, was cancelled or skipped; it
// then sees only the results of the dependencies that succeeded.
func RunOnFailure() NodeOption {
	return func(n *GraphNode) error {
		n.spec.RunOnFailure = true
		return nil
	}
}
