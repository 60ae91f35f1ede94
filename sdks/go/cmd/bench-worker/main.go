// Command bench-worker is the Go counterpart of the Python benchmark worker (bench/hg_worker.py):
//
//	bench-worker --coordinator HOST:PORT [--streams K] [--slots N] [--name NAME] [--impl IGNORED]
//
// It runs K independent Workers (one stream each, named NAME-0 ... NAME-K-1) with N slots
// each, serving the agents of bench/agents.py: noop, stamp, spawn and join. Before connecting
// it prints one line to stdout, {"ready": "go", "time": UNIX_SECONDS}; everything else goes to
// stderr. It runs until SIGTERM/SIGINT and then exits 0 at once, without draining.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
)

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("coordinator", "", "coordinator address HOST:PORT (required)")
	streams := flag.Int("streams", 1, "independent worker streams in this process")
	slots := flag.Int("slots", 64, "agents run at once per stream")
	name := flag.String("name", fmt.Sprintf("bench-go-%d", os.Getpid()), "worker name prefix (stream i is NAME-i)")
	flag.String("impl", "", "ignored (accepted for compatibility with bench.hg_worker)")
	flag.Parse()
	if *addr == "" || *streams < 1 || *slots < 1 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: bench-worker --coordinator HOST:PORT [--streams K] [--slots N] [--name NAME]")
		return 2
	}

	// Benchmarks need no graceful drain: a signal ends the process at once.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	// os.Stdout is unbuffered: the line is out once Printf returns. Nothing else goes to stdout.
	fmt.Printf("{\"ready\": \"go\", \"time\": %s}\n", strconv.FormatFloat(now(), 'f', -1, 64))

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	errs := make(chan error, *streams)
	for i := range *streams {
		w := hivegrid.NewWorker(
			hivegrid.WithName(fmt.Sprintf("%s-%d", *name, i)),
			hivegrid.WithSlots(*slots),
			hivegrid.WithLogger(logger),
		)
		if err := register(w); err != nil {
			fmt.Fprintf(os.Stderr, "bench-worker: %v\n", err)
			return 2
		}
		go func() { errs <- w.Run(context.Background(), *addr) }()
	}

	// Run returns nil after a drain the coordinator asked for, an error when it cannot go on.
	for range *streams {
		select {
		case <-sigs:
			return 0
		case err := <-errs:
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench-worker: %v\n", err)
				if errors.As(err, new(*hivegrid.RefusedError)) {
					return 2
				}
				return 1
			}
		}
	}
	return 0
}

// now is the wall clock in unix seconds.
func now() float64 { return float64(time.Now().UnixMicro()) / 1e6 }

func register(w *hivegrid.Worker) error {
	return errors.Join(
		w.Register("noop", func(context.Context, *hivegrid.Node) (any, error) {
			return nil, nil
		}),
		w.Register("stamp", func(context.Context, *hivegrid.Node) (any, error) {
			s := now()
			return map[string]float64{"s": s, "e": now()}, nil
		}),
		w.Register("join", func(_ context.Context, n *hivegrid.Node) (any, error) {
			return len(n.Deps), nil
		}),
		w.Register("spawn", spawn),
	)
}

// spawn: input {"count": n, "child": agent (default "noop"), "child_input": any} adds the
// children "<id>/c<i>" (can_mutate) and a join "<id>/join" depending on all of them.
func spawn(_ context.Context, n *hivegrid.Node) (any, error) {
	var spec struct {
		Count      *float64        `json:"count"`
		Child      string          `json:"child"`
		ChildInput json.RawMessage `json:"child_input"`
	}
	if err := n.Decode(&spec); err != nil {
		return nil, err
	}
	if spec.Count == nil {
		return nil, fmt.Errorf("spawn: input of node %s has no count", n.NodeID)
	}
	count := int(*spec.Count)
	if spec.Child == "" {
		spec.Child = "noop"
	}
	nullInput := len(spec.ChildInput) == 0 || string(spec.ChildInput) == "null"
	ids := make([]string, count)
	for i := range count {
		ids[i] = fmt.Sprintf("%s/c%d", n.NodeID, i)
		if !nullInput {
			n.AddNode(hivegrid.NodeSpec{ID: ids[i], Agent: spec.Child, Input: spec.ChildInput, CanMutate: true})
		} else if err := addNodeNoInput(n, ids[i], spec.Child, true, nil); err != nil {
			return nil, err
		}
	}
	if err := addNodeNoInput(n, n.NodeID+"/join", "join", false, ids); err != nil {
		return nil, err
	}
	return map[string]int{"spawned": count}, nil
}

// addNodeNoInput adds a node whose input is left empty (null), as bench/agents.py sends it.
// NodeSpec.Input always encodes a value (nil as "null"); the protocol's JSON form of a
// mutation can leave the input out.
func addNodeNoInput(n *hivegrid.Node, id, agent string, canMutate bool, dependsOn []string) error {
	type node struct {
		ID        string   `json:"id"`
		Agent     string   `json:"agent"`
		DependsOn []string `json:"depends_on,omitempty"`
		CanMutate bool     `json:"can_mutate,omitempty"`
	}
	type addNode struct {
		Node node `json:"node"`
	}
	mut, err := json.Marshal(map[string]addNode{"add_node": {node{id, agent, dependsOn, canMutate}}})
	if err != nil {
		return err
	}
	return n.AddMutationJSON(mut)
}
