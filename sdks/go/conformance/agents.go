// Package conformance holds the agents of the cross-language conformance suite
// (shared/design/CONFORMANCE.md), with exactly the semantics every SDK implements.
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
)

// exit ends the process for the crash agent; tests replace it.
var exit = os.Exit

// Agents returns the conformance agents by name.
func Agents() map[string]hivegrid.AgentFunc {
	return map[string]hivegrid.AgentFunc{
		"echo":     echo,
		"fail":     fail,
		"flaky":    flaky,
		"sleep":    sleep,
		"spawn":    spawn,
		"sum":      sum,
		"value":    value,
		"progress": progress,
		"mutate":   mutate,
		"crash":    crash,
	}
}

// Register registers every conformance agent on w.
func Register(w *hivegrid.Worker) error {
	for name, fn := range Agents() {
		if err := w.Register(name, fn); err != nil {
			return err
		}
	}
	return nil
}

// decode reads the node input into v; a malformed input fails for good.
func decode(n *hivegrid.Node, v any) error {
	if err := n.Decode(v); err != nil {
		return hivegrid.NonRetryable(err)
	}
	return nil
}

func echo(_ context.Context, n *hivegrid.Node) (any, error) {
	return map[string]any{"input": n.Input, "deps": n.Deps}, nil
}

func fail(_ context.Context, n *hivegrid.Node) (any, error) {
	var in struct {
		Message   string `json:"message"`
		Retryable bool   `json:"retryable"`
	}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	err := errors.New(in.Message)
	if !in.Retryable {
		err = hivegrid.NonRetryable(err)
	}
	return nil, err
}

func flaky(_ context.Context, n *hivegrid.Node) (any, error) {
	var in struct {
		FailTimes uint32 `json:"fail_times"`
	}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	if n.Attempt <= in.FailTimes {
		return nil, fmt.Errorf("flaky failure on attempt %d", n.Attempt)
	}
	return map[string]any{"attempt": n.Attempt}, nil
}

func sleep(ctx context.Context, n *hivegrid.Node) (any, error) {
	var in struct {
		Seconds json.Number `json:"seconds"`
	}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	s, err := in.Seconds.Float64()
	if err != nil && in.Seconds != "" {
		return nil, hivegrid.NonRetryable(fmt.Errorf("seconds: %w", err))
	}
	timer := time.NewTimer(time.Duration(s * float64(time.Second)))
	defer timer.Stop()
	select {
	case <-timer.C:
		return map[string]any{"slept": json.RawMessage(orZero(in.Seconds))}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func orZero(n json.Number) string {
	if n == "" {
		return "0"
	}
	return string(n)
}

func spawn(_ context.Context, n *hivegrid.Node) (any, error) {
	in := struct {
		Count      int             `json:"count"`
		ChildAgent string          `json:"child_agent"`
		ChildInput json.RawMessage `json:"child_input"`
	}{ChildAgent: "echo"}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	if in.ChildAgent == "" {
		in.ChildAgent = "echo"
	}
	children := make([]string, in.Count)
	for i := range children {
		children[i] = fmt.Sprintf("%s/c%d", n.NodeID, i)
		n.AddNode(hivegrid.NodeSpec{ID: children[i], Agent: in.ChildAgent, Input: in.ChildInput, CanMutate: true})
	}
	n.AddNode(hivegrid.NodeSpec{ID: n.NodeID + "/join", Agent: "sum", DependsOn: children})
	return map[string]any{"spawned": in.Count}, nil
}

// sum adds the numbers at the top level of every dependency result. Integers are added
// exactly, so an all-integer sum is emitted as an integer.
func sum(_ context.Context, n *hivegrid.Node) (any, error) {
	intSum, floatSum, allInt := new(big.Int), 0.0, true
	add := func(v any) {
		num, ok := v.(json.Number)
		if !ok {
			return
		}
		if i, ok := new(big.Int).SetString(string(num), 10); ok && !strings.ContainsAny(string(num), ".eE") {
			intSum.Add(intSum, i)
			return
		}
		if f, err := num.Float64(); err == nil {
			floatSum += f
			allInt = false
		}
	}
	for _, id := range slices.Sorted(maps.Keys(n.Deps)) {
		dec := json.NewDecoder(strings.NewReader(string(n.Deps[id])))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			continue
		}
		if obj, ok := v.(map[string]any); ok {
			for _, k := range slices.Sorted(maps.Keys(obj)) {
				add(obj[k])
			}
		} else {
			add(v)
		}
	}
	if allInt {
		return json.RawMessage(intSum.String()), nil
	}
	f, _ := new(big.Float).SetInt(intSum).Float64()
	return f + floatSum, nil
}

func value(_ context.Context, n *hivegrid.Node) (any, error) {
	var in struct {
		Value json.RawMessage `json:"value"`
	}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	if in.Value == nil {
		in.Value = json.RawMessage("null")
	}
	return map[string]any{"value": in.Value}, nil
}

func progress(_ context.Context, n *hivegrid.Node) (any, error) {
	var in struct {
		Steps int `json:"steps"`
	}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	for i := 1; i <= in.Steps; i++ {
		if err := n.Progress(map[string]int{"step": i}); err != nil {
			return nil, err
		}
	}
	return map[string]any{"steps": in.Steps}, nil
}

func mutate(_ context.Context, n *hivegrid.Node) (any, error) {
	var in struct {
		Mutations []json.RawMessage `json:"mutations"`
	}
	if err := decode(n, &in); err != nil {
		return nil, err
	}
	for _, m := range in.Mutations {
		if err := n.AddMutationJSON(m); err != nil {
			return nil, hivegrid.NonRetryable(err)
		}
	}
	return map[string]any{}, nil
}

func crash(context.Context, *hivegrid.Node) (any, error) {
	exit(1)
	return nil, errors.New("crash: process did not exit")
}
