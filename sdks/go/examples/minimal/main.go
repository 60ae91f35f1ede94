// Command minimal is the smallest useful Hivegrid worker: one agent, drained on Ctrl-C/SIGTERM.
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := hivegrid.NewWorker(hivegrid.WithName("greeter"), hivegrid.WithSlots(8))
	err := w.Register("greet", func(ctx context.Context, n *hivegrid.Node) (any, error) {
		var in struct{ Name string }
		if err := n.Decode(&in); err != nil {
			return nil, hivegrid.NonRetryable(err)
		}
		return map[string]string{"greeting": "hello " + in.Name}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(ctx, "127.0.0.1:50051"); err != nil {
		log.Fatal(err)
	}
}
