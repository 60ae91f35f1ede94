package hivegrid

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// AgentFunc runs one attempt of one node. ctx is cancelled when the coordinator cancels the
// node (run cancelled, subtree pruned, timeout). The returned value is encoded as the node's
// JSON result (a json.RawMessage is used as is). A returned error fails the attempt, retryably
// unless it was made with NonRetryable. A panic is recovered and fails the attempt retryably.
type AgentFunc func(ctx context.Context, n *Node) (any, error)

// Node is what an agent knows about the attempt it runs, and how it talks back: Progress, and
// the graph mutations (AddNode, AddEdge, ...) sent together with its successful result.
type Node struct {
	RunID   string
	NodeID  string
	Attempt uint32 // 1 for the first attempt
	Agent   string
	// Input is the node's JSON input ("null" when it has none).
	Input json.RawMessage
	// Deps maps the id of each dependency that succeeded to its JSON result.
	Deps map[string]json.RawMessage
	// CanMutate tells whether the coordinator accepts mutations from this node.
	CanMutate bool
	Metadata  map[string]string
	// Timeout is the attempt's start-to-close timeout (0: none). The coordinator enforces it
	// by cancelling ctx; it is here for agents that want to plan around it.
	Timeout time.Duration

	Mutations

	ref  *pb.AssignmentRef
	sink progressSink

	mu       sync.Mutex
	finished bool
}

type progressSink interface {
	pushProgress(p *pb.Progress)
}

func newNode(a *pb.Assignment, sink progressSink) *Node {
	deps := make(map[string]json.RawMessage, len(a.GetDeps()))
	for _, d := range a.GetDeps() {
		deps[d.GetNodeId()] = jsonOrNull(d.GetResult())
	}
	return &Node{
		RunID:     a.GetRef().GetRunId(),
		NodeID:    a.GetRef().GetNodeId(),
		Attempt:   a.GetRef().GetAttempt(),
		Agent:     a.GetAgent(),
		Input:     jsonOrNull(a.GetInput()),
		Deps:      deps,
		CanMutate: a.GetCanMutate(),
		Metadata:  a.GetMetadata(),
		Timeout:   time.Duration(a.GetTimeoutS() * float64(time.Second)),
		ref:       a.GetRef(),
		sink:      sink,
	}
}

// jsonOrNull maps the protocol's empty byte string to JSON null.
func jsonOrNull(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return json.RawMessage(b)
}

// Decode unmarshals the node's JSON input into v.
func (n *Node) Decode(v any) error {
	if err := json.Unmarshal(n.Input, v); err != nil {
		return fmt.Errorf("hivegrid: decode input of node %s: %w", n.NodeID, err)
	}
	return nil
}

// Progress sends v, encoded as JSON, to the clients watching the run. Progress items of one
// node arrive in the order sent. It does not block on the network.
func (n *Node) Progress(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("hivegrid: encode progress of node %s: %w", n.NodeID, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// Invariant: progress is pushed under n.mu and the result only after finished is set, so
	// every progress item of an attempt is queued before its result.
	if n.finished {
		return ErrNodeFinished
	}
	n.sink.pushProgress(&pb.Progress{Ref: n.ref, Data: data})
	return nil
}

// run calls the agent and turns what it returned into a Result (never OUTCOME_CANCELLED: the
// runtime decides that, since only it knows whether a cancel was delivered).
func (n *Node) run(ctx context.Context, fn AgentFunc) *pb.Result {
	value, err := callAgent(ctx, fn, n)
	n.mu.Lock()
	n.finished = true
	n.mu.Unlock()
	if err != nil {
		return failedResult(n.ref, err.Error(), !IsNonRetryable(err), "agent")
	}
	data, err := json.Marshal(value)
	if err != nil {
		return failedResult(n.ref, fmt.Sprintf("encode result: %v", err), false, "agent")
	}
	muts, err := n.Mutations.take()
	if err != nil {
		return failedResult(n.ref, err.Error(), false, "agent")
	}
	return &pb.Result{Ref: n.ref, Outcome: pb.Outcome_OUTCOME_SUCCEEDED, Result: data, Mutations: muts}
}

func callAgent(ctx context.Context, fn AgentFunc, n *Node) (value any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("agent %s panicked: %v\n%s", n.Agent, r, debug.Stack())
		}
	}()
	return fn(ctx, n)
}

func failedResult(ref *pb.AssignmentRef, message string, retryable bool, kind string) *pb.Result {
	return &pb.Result{
		Ref:     ref,
		Outcome: pb.Outcome_OUTCOME_FAILED,
		Error:   &pb.NodeError{Message: message, Retryable: retryable, Kind: kind},
	}
}
