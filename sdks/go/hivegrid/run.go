package hivegrid

import (
	"encoding/json"
	"math"
	"strings"
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// RunState is the state of a run: "running", then one of "succeeded", "failed", "cancelled".
type RunState string

// The states of a run.
const (
	RunRunning   RunState = "running"
	RunSucceeded RunState = "succeeded"
	RunFailed    RunState = "failed"
	RunCancelled RunState = "cancelled"
)

// Ended reports whether the run is over.
func (s RunState) Ended() bool { return s == RunSucceeded || s == RunFailed || s == RunCancelled }

// NodeState is the state of a node of a run.
type NodeState string

// The states of a node.
const (
	NodePending     NodeState = "pending"     // waiting on dependencies
	NodeReady       NodeState = "ready"       // queued for a worker, or waiting out a retry backoff
	NodeRunning     NodeState = "running"     // leased to a worker
	NodeSucceeded   NodeState = "succeeded"   // has a result
	NodeFailed      NodeState = "failed"      // out of attempts, or failed for good
	NodeCancelled   NodeState = "cancelled"   // the run was cancelled, or the node pruned
	NodeSkipped     NodeState = "skipped"     // a dependency did not succeed
	NodeSpeculative NodeState = "speculative" // held back until confirmed
)

// Ended reports whether the node is over.
func (s NodeState) Ended() bool {
	return s == NodeSucceeded || s == NodeFailed || s == NodeCancelled || s == NodeSkipped
}

// Run is a run as the coordinator last saw it.
type Run struct {
	ID    string
	Name  string
	State RunState
	// CreatedAt and EndedAt (zero while running) are the coordinator's clock.
	CreatedAt, EndedAt time.Time
	// LastSeq is the sequence number of the run's last event: Watch from it for what follows.
	LastSeq uint64
	// Nodes in the order they were added.
	Nodes []NodeStatus
}

// Node returns the node of id, or nil.
func (r *Run) Node(id string) *NodeStatus {
	for i := range r.Nodes {
		if r.Nodes[i].ID == id {
			return &r.Nodes[i]
		}
	}
	return nil
}

// NodeStatus is one node of a Run.
type NodeStatus struct {
	ID    string
	Agent string
	State NodeState
	// Attempts dispatched so far.
	Attempts uint32
	// Result is the JSON result of a succeeded node (nil otherwise).
	Result json.RawMessage
	// Error and ErrorKind describe the last error: of a node that failed, was cancelled or
	// skipped, or of an attempt that failed before a retry. ErrorKind is one of "agent",
	// "timeout", "lost_worker", "mutation_rejected", "unknown_agent", "cancelled", "skipped".
	Error, ErrorKind string
	DependsOn        []string
	// ParentID is the node whose agent added this one ("" for submitted nodes).
	ParentID string
}

// EventKind names what an Event records.
type EventKind string

// The kinds of events in a run's log.
const (
	EventRunSubmitted     EventKind = "run_submitted"
	EventNodeDispatched   EventKind = "node_dispatched"   // NodeID, Attempt, Worker
	EventAttemptFinished  EventKind = "attempt_finished"  // NodeID, Attempt, Outcome, Result or Error
	EventAttemptLost      EventKind = "attempt_lost"      // NodeID, Attempt, Error (why)
	EventAttemptTimedOut  EventKind = "attempt_timed_out" // NodeID, Attempt
	EventProgress         EventKind = "progress"          // NodeID, Attempt, Data
	EventRunCancelled     EventKind = "run_cancelled"     // Error (the reason)
	EventMutationsApplied EventKind = "mutations_applied" // a client's mutation batch
	EventRunEnded         EventKind = "run_ended"         // RunState
	EventNodeFailed       EventKind = "node_failed"       // NodeID, Error
)

// Event is one entry of a run's log.
type Event struct {
	RunID string
	// Seq numbers a run's events from 1, without gaps.
	Seq  uint64
	Time time.Time
	Kind EventKind
	// NodeID and Attempt are the node (and attempt) the event is about, if any.
	NodeID  string
	Attempt uint32
	// Worker is the worker a node was dispatched to.
	Worker string
	// Outcome of a finished attempt: "succeeded", "failed" or "cancelled".
	Outcome string
	// Result is a succeeded attempt's JSON result; Data a progress item's JSON.
	Result, Data json.RawMessage
	// Error says why an attempt failed or was lost, a node failed, or the run was cancelled.
	Error string
	// RunState is the final state, in a run_ended event.
	RunState RunState
	// Transitions are the node state changes the event caused.
	Transitions []Transition
}

// Transition is a node's change of state.
type Transition struct {
	NodeID string
	State  NodeState
}

func runStateOf(s pb.RunState) RunState {
	return RunState(enumName(s.String(), "RUN_STATE_"))
}

func nodeStateOf(s pb.NodeState) NodeState {
	return NodeState(enumName(s.String(), "NODE_STATE_"))
}

// enumName turns a generated enum name (NODE_STATE_SUCCEEDED) into the Go SDK's (succeeded).
func enumName(name, prefix string) string { return strings.ToLower(strings.TrimPrefix(name, prefix)) }

func unixTime(s float64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	sec, frac := math.Modf(s)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// jsonOrNil is a result or data field: nil when empty, never a zero-length slice.
func jsonOrNil(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

func runOf(info *pb.RunInfo) *Run {
	return &Run{
		ID:        info.GetRunId(),
		Name:      info.GetName(),
		State:     runStateOf(info.GetState()),
		CreatedAt: unixTime(info.GetCreatedAt()),
		EndedAt:   unixTime(info.GetEndedAt()),
		LastSeq:   info.GetLastSeq(),
	}
}

func nodeStatusOf(n *pb.NodeStatus) NodeStatus {
	return NodeStatus{
		ID:        n.GetId(),
		Agent:     n.GetAgent(),
		State:     nodeStateOf(n.GetState()),
		Attempts:  n.GetAttempts(),
		Result:    jsonOrNil(n.GetResult()),
		Error:     n.GetError().GetMessage(),
		ErrorKind: n.GetError().GetKind(),
		DependsOn: n.GetDependsOn(),
		ParentID:  n.GetParentId(),
	}
}

func eventOf(e *pb.RunEvent) Event {
	ev := Event{RunID: e.GetRunId(), Seq: e.GetSeq(), Time: unixTime(e.GetTime())}
	for _, t := range e.GetTransitions() {
		ev.Transitions = append(ev.Transitions, Transition{NodeID: t.GetNodeId(), State: nodeStateOf(t.GetState())})
	}
	switch k := e.GetKind().(type) {
	case *pb.RunEvent_RunSubmitted:
		ev.Kind = EventRunSubmitted
	case *pb.RunEvent_NodeDispatched:
		ev.Kind, ev.NodeID, ev.Attempt = EventNodeDispatched, k.NodeDispatched.GetNodeId(), k.NodeDispatched.GetAttempt()
		ev.Worker = k.NodeDispatched.GetWorkerName()
	case *pb.RunEvent_AttemptFinished:
		f := k.AttemptFinished
		ev.Kind, ev.NodeID, ev.Attempt = EventAttemptFinished, f.GetNodeId(), f.GetAttempt()
		ev.Outcome = enumName(f.GetOutcome().String(), "OUTCOME_")
		ev.Result, ev.Error = jsonOrNil(f.GetResult()), f.GetError().GetMessage()
		if ev.Error == "" && f.GetRejection() != "" {
			ev.Error = f.GetRejection()
		}
	case *pb.RunEvent_AttemptLost:
		ev.Kind, ev.NodeID, ev.Attempt = EventAttemptLost, k.AttemptLost.GetNodeId(), k.AttemptLost.GetAttempt()
		ev.Error = k.AttemptLost.GetReason()
	case *pb.RunEvent_AttemptTimedOut:
		ev.Kind, ev.NodeID, ev.Attempt = EventAttemptTimedOut, k.AttemptTimedOut.GetNodeId(), k.AttemptTimedOut.GetAttempt()
	case *pb.RunEvent_Progress:
		ev.Kind, ev.NodeID, ev.Attempt = EventProgress, k.Progress.GetNodeId(), k.Progress.GetAttempt()
		ev.Data = jsonOrNil(k.Progress.GetData())
	case *pb.RunEvent_RunCancelled:
		ev.Kind, ev.Error = EventRunCancelled, k.RunCancelled.GetReason()
	case *pb.RunEvent_MutationsApplied:
		ev.Kind = EventMutationsApplied
	case *pb.RunEvent_RunEnded:
		ev.Kind, ev.RunState = EventRunEnded, runStateOf(k.RunEnded.GetState())
	case *pb.RunEvent_NodeFailed:
		ev.Kind, ev.NodeID, ev.Error = EventNodeFailed, k.NodeFailed.GetNodeId(), k.NodeFailed.GetError().GetMessage()
	default:
		// A kind newer than this SDK: still an event, in order, with its seq.
		ev.Kind = "unknown"
	}
	return ev
}
