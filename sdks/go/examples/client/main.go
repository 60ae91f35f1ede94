// Command client submits a graph built in code, follows its events and prints the results.
// It needs a coordinator and a worker that runs the conformance agents "value" and "sum":
//
//	python -m hivegrid.coordinator coordinator --store memory &
//	sdks/go/bin/conformance-worker --coordinator 127.0.0.1:50051 &
//	sdks/go/bin/example-client        # HIVEGRID_COORDINATOR=HOST:PORT to go elsewhere
package main

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"os"

	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
)

func main() {
	ctx := context.Background()
	c, err := hivegrid.Dial(cmp.Or(os.Getenv("HIVEGRID_COORDINATOR"), "127.0.0.1:50051"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	g := hivegrid.NewGraph("example")
	a := g.Node("value", map[string]int{"value": 2})
	b := g.Node("value", map[string]int{"value": 3})
	g.Node("sum", nil, hivegrid.After(a, b))
	runID, err := c.Submit(ctx, g)
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Watch(ctx, runID, 0) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Seq, ev.Kind, ev.NodeID)
	}
	run, err := c.Wait(ctx, runID)
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range run.Nodes {
		fmt.Println(n.ID, n.State, string(n.Result))
	}
}
