// Command conformance-worker runs the Go SDK's conformance agents against a coordinator:
//
//	conformance-worker --coordinator HOST:PORT [--slots N] [--name NAME]
//
// The address may also come from HIVEGRID_COORDINATOR (the flag wins). The connection uses
// TLS when HIVEGRID_TLS_CA (and for mutual TLS, HIVEGRID_TLS_CERT and HIVEGRID_TLS_KEY) is
// set, and sends HIVEGRID_TOKEN as a bearer token. It runs until SIGTERM/SIGINT or a
// DrainRequest, drains, and exits 0; a refused Hello, bad flags or HIVEGRID_TLS_CERT without
// HIVEGRID_TLS_KEY (or the reverse) exit 2, any other error 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hivegrid/hivegrid/sdks/go/conformance"
	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
)

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("coordinator", os.Getenv("HIVEGRID_COORDINATOR"), "coordinator address HOST:PORT (env HIVEGRID_COORDINATOR)")
	slots := flag.Int("slots", hivegrid.DefaultSlots, "agents run at once")
	name := flag.String("name", "go-conformance", "worker name")
	flag.Parse()
	if *addr == "" || *slots < 1 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: conformance-worker --coordinator HOST:PORT [--slots N] [--name NAME]")
		return 2
	}
	connOpts, err := conformance.ConnOptions(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance-worker: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process at once
	}()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w := hivegrid.NewWorker(append([]hivegrid.Option{
		hivegrid.WithName(*name),
		hivegrid.WithSlots(*slots),
		hivegrid.WithLogger(logger),
		hivegrid.WithOnConnect(func(session string) {
			fmt.Fprintf(os.Stderr, "hivegrid worker %s connected: session %s\n", *name, session)
		}),
	}, connOpts...)...)
	if err := conformance.Register(w); err != nil {
		fmt.Fprintf(os.Stderr, "conformance-worker: %v\n", err)
		return 2
	}
	if err := w.Run(ctx, *addr); err != nil {
		fmt.Fprintf(os.Stderr, "conformance-worker: %v\n", err)
		if errors.As(err, new(*hivegrid.RefusedError)) {
			return 2
		}
		return 1
	}
	return 0
}
