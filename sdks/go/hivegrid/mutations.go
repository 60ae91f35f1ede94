package hivegrid

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// NodeSpec describes a node to add to the running graph.
type NodeSpec struct {
	ID        string
	Agent     string
	Input     any // encoded as JSON; a json.RawMessage is used as is
	DependsOn []string
	Retry     *RetryPolicy
	Timeout   time.Duration
	Priority  int32
	Labels    map[string]string
	Metadata  map[string]string
	// CanMutate lets the node's own agent send mutations.
	CanMutate bool
	// RunOnFailure runs the node even when a dependency did not succeed.
	RunOnFailure bool
}

// RetryPolicy: zero fields take the coordinator's defaults.
type RetryPolicy struct {
	MaxAttempts    uint32
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	Jitter         float64
}

// NodeChanges lists what ModifyNode changes; nil fields stay as they are. To set the input
// to JSON null, pass json.RawMessage("null").
type NodeChanges struct {
	Input    any
	Priority *int32
	Retry    *RetryPolicy
	Timeout  *time.Duration
}

// Mutations collects the graph mutations an agent sends with its successful result. They are
// committed atomically with the result, or rejected whole (the attempt then fails). The
// builder methods never fail on the spot: an input that cannot be encoded as JSON fails the
// attempt, non-retryably, when the agent returns.
type Mutations struct {
	mu   sync.Mutex
	list []*pb.Mutation
	err  error
}

func (m *Mutations) add(mut *pb.Mutation, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if m.err == nil {
			m.err = err
		}
		return
	}
	m.list = append(m.list, mut)
}

func (m *Mutations) take() ([]*pb.Mutation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.list, m.err
}

// AddNode adds a node; its dependencies may be existing nodes or nodes added before it.
func (m *Mutations) AddNode(spec NodeSpec) { m.addNode(spec, false) }

// AddSpeculativeNode adds a node held back until ConfirmSpeculative.
func (m *Mutations) AddSpeculativeNode(spec NodeSpec) { m.addNode(spec, true) }

func (m *Mutations) addNode(spec NodeSpec, speculative bool) {
	s, err := spec.proto()
	m.add(&pb.Mutation{Kind: &pb.Mutation_AddNode{AddNode: &pb.AddNode{Node: s, Speculative: speculative}}}, err)
}

// AddEdge makes to depend on from (to must not have started).
func (m *Mutations) AddEdge(from, to string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_AddEdge{AddEdge: &pb.AddEdge{FromId: from, ToId: to}}}, nil)
}

// RemoveEdge removes the dependency of to on from.
func (m *Mutations) RemoveEdge(from, to string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_RemoveEdge{RemoveEdge: &pb.RemoveEdge{FromId: from, ToId: to}}}, nil)
}

// RemoveNode removes a node that has not started.
func (m *Mutations) RemoveNode(id string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_RemoveNode{RemoveNode: &pb.RemoveNode{Id: id}}}, nil)
}

// ModifyNode changes a node that has not started.
func (m *Mutations) ModifyNode(id string, c NodeChanges) {
	mod := &pb.ModifyNode{Id: id, Priority: c.Priority, Retry: c.Retry.proto()}
	if c.Timeout != nil {
		s := c.Timeout.Seconds()
		mod.TimeoutS = &s
	}
	var err error
	if c.Input != nil {
		mod.Input, err = encodeInput(id, c.Input)
	}
	m.add(&pb.Mutation{Kind: &pb.Mutation_ModifyNode{ModifyNode: mod}}, err)
}

// SplitNode replaces a node that has not started by several.
func (m *Mutations) SplitNode(id string, replacements ...NodeSpec) {
	split := &pb.SplitNode{Id: id}
	for _, r := range replacements {
		s, err := r.proto()
		if err != nil {
			m.add(nil, err)
			return
		}
		split.Replacements = append(split.Replacements, s)
	}
	m.add(&pb.Mutation{Kind: &pb.Mutation_SplitNode{SplitNode: split}}, nil)
}

// InjectBefore adds spec and makes target (not started) depend on it.
func (m *Mutations) InjectBefore(target string, spec NodeSpec) {
	s, err := spec.proto()
	m.add(&pb.Mutation{Kind: &pb.Mutation_InjectBefore{InjectBefore: &pb.InjectBefore{TargetId: target, Node: s}}}, err)
}

// PruneSubgraph cancels root and every node downstream of it that has not ended.
func (m *Mutations) PruneSubgraph(root string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_PruneSubgraph{PruneSubgraph: &pb.PruneSubgraph{RootId: root}}}, nil)
}

// MarkSpeculative holds back a node that has not started.
func (m *Mutations) MarkSpeculative(id string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_MarkSpeculative{MarkSpeculative: &pb.MarkSpeculative{Id: id}}}, nil)
}

// ConfirmSpeculative releases a speculative node.
func (m *Mutations) ConfirmSpeculative(id string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_ConfirmSpeculative{ConfirmSpeculative: &pb.ConfirmSpeculative{Id: id}}}, nil)
}

// DiscardSpeculative drops a speculative node (it and its waiting dependents are skipped).
func (m *Mutations) DiscardSpeculative(id string) {
	m.add(&pb.Mutation{Kind: &pb.Mutation_DiscardSpeculative{DiscardSpeculative: &pb.DiscardSpeculative{Id: id}}}, nil)
}

// AddMutationJSON adds one mutation given in the protocol's JSON form, an object with one
// key, the snake_case kind, e.g. {"add_edge": {"from_id": "a", "to_id": "b"}}. Node inputs
// are plain JSON values. Unlike the other builder methods it reports a malformed mutation
// at once and adds nothing.
func (m *Mutations) AddMutationJSON(data []byte) error {
	mut, err := mutationFromJSON(data)
	if err != nil {
		return err
	}
	m.add(mut, nil)
	return nil
}

func (s NodeSpec) proto() (*pb.NodeSpec, error) {
	input, err := encodeInput(s.ID, s.Input)
	if err != nil {
		return nil, err
	}
	return &pb.NodeSpec{
		Id:           s.ID,
		Agent:        s.Agent,
		Input:        input,
		DependsOn:    s.DependsOn,
		Retry:        s.Retry.proto(),
		TimeoutS:     s.Timeout.Seconds(),
		Priority:     s.Priority,
		Labels:       s.Labels,
		CanMutate:    s.CanMutate,
		Metadata:     s.Metadata,
		RunOnFailure: s.RunOnFailure,
	}, nil
}

func (r *RetryPolicy) proto() *pb.RetryPolicy {
	if r == nil {
		return nil
	}
	return &pb.RetryPolicy{
		MaxAttempts:     r.MaxAttempts,
		InitialBackoffS: r.InitialBackoff.Seconds(),
		MaxBackoffS:     r.MaxBackoff.Seconds(),
		Multiplier:      r.Multiplier,
		Jitter:          r.Jitter,
	}
}

func encodeInput(id string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("hivegrid: encode input of mutation node %q: %w", id, err)
	}
	return data, nil
}

// mutationFromJSON parses the protocol's JSON form of a mutation. It rewrites the plain-JSON
// node inputs into the base64 strings protojson expects for bytes, then lets protojson do the
// rest (it accepts the snake_case field names).
func mutationFromJSON(data []byte) (*pb.Mutation, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(data, &outer); err != nil {
		return nil, fmt.Errorf("hivegrid: mutation is not a JSON object: %w", err)
	}
	if len(outer) != 1 {
		return nil, fmt.Errorf("hivegrid: mutation must have exactly one key (its kind), got %d", len(outer))
	}
	for kind, body := range outer {
		var err error
		switch kind {
		case "add_node", "inject_before":
			body, err = rewriteObject(body, "node", inputToBase64)
		case "split_node":
			body, err = rewriteObject(body, "replacements", func(raw json.RawMessage) (json.RawMessage, error) {
				var specs []json.RawMessage
				if err := json.Unmarshal(raw, &specs); err != nil {
					return nil, err
				}
				for i := range specs {
					if specs[i], err = inputToBase64(specs[i]); err != nil {
						return nil, err
					}
				}
				return json.Marshal(specs)
			})
		case "modify_node":
			body, err = inputToBase64(body)
		}
		if err != nil {
			return nil, fmt.Errorf("hivegrid: mutation %s: %w", kind, err)
		}
		wrapped, err := json.Marshal(map[string]json.RawMessage{kind: body})
		if err != nil {
			return nil, fmt.Errorf("hivegrid: mutation %s: %w", kind, err)
		}
		mut := &pb.Mutation{}
		if err := protojson.Unmarshal(wrapped, mut); err != nil {
			return nil, fmt.Errorf("hivegrid: mutation %s: %w", kind, err)
		}
		if mut.Kind == nil {
			return nil, fmt.Errorf("hivegrid: mutation %s: no kind", kind)
		}
		return mut, nil
	}
	return nil, errors.New("unreachable")
}

// inputToBase64 replaces the plain JSON value of obj["input"] by its base64 text. JSON null
// becomes the empty byte string, which the protocol reads as null.
func inputToBase64(obj json.RawMessage) (json.RawMessage, error) {
	return rewriteObject(obj, "input", func(raw json.RawMessage) (json.RawMessage, error) {
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return nil, err
		}
		if compact.String() == "null" {
			compact.Reset()
		}
		return json.Marshal(base64.StdEncoding.EncodeToString(compact.Bytes()))
	})
}

// rewriteObject applies f to obj[key] when obj is a JSON object that has key.
func rewriteObject(obj json.RawMessage, key string, f func(json.RawMessage) (json.RawMessage, error)) (json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(obj, &fields); err != nil {
		return nil, err
	}
	v, ok := fields[key]
	if !ok {
		return obj, nil
	}
	nv, err := f(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	fields[key] = nv
	return json.Marshal(fields)
}
