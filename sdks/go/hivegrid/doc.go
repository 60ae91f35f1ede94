// Package hivegrid is the Go SDK of Hivegrid: a Worker that runs agents for a coordinator,
// and a Client that submits runs and follows them.
//
//	w := hivegrid.NewWorker(hivegrid.WithName("images"), hivegrid.WithSlots(8))
//	err := w.Register("resize", func(ctx context.Context, n *hivegrid.Node) (any, error) { ... })
//	err = w.Run(ctx, "127.0.0.1:7070") // returns nil after a graceful drain once ctx is done
//
//	c, err := hivegrid.Dial("127.0.0.1:7070")
//	g := hivegrid.NewGraph("thumbnails")
//	src := g.Node("fetch", map[string]string{"url": u})
//	g.Node("resize", map[string]int{"width": 200}, hivegrid.After(src))
//	runID, err := c.Submit(ctx, g)
//	for ev, err := range c.Watch(ctx, runID, 0) { ... }
//	run, err := c.Wait(ctx, runID)
//
// Both connect the same way: plaintext by default, WithTLS / WithTLSConfig for TLS (and a
// client certificate for mutual TLS), WithToken for a bearer token. The protocol's version,
// defaults and limits come from the generated ProtocolConstant of worker.proto.
//
// # Theory of operation of the Worker
//
// A Worker keeps one bidirectional stream (WorkerService/Connect) open. One goroutine, the
// runtime loop, owns all session state: the running tasks, the finished results waiting for
// their Ack, and the progress queue. Agents run on their own goroutines and hand their
// progress and results to the loop through a mutex-guarded inbox, so an agent never blocks on
// the network. A single writer goroutine performs stream.Send; while it is busy, results and
// progress accumulate and go out together in the next message, which is what batches them.
// The coordinator batches too: each Push it sends carries acks, new assignments and cancels,
// which the loop applies in that order (a cancel may name an assignment of its own Push).
//
// Invariant: a result is kept until its Ack arrives. When the stream breaks, the loop
// reconnects with backoff, lists every running or unacked assignment in Hello.held and sends
// the unacked results and unsent progress again. Agents survive reconnects, except those whose
// attempt the coordinator did not keep (absent from Welcome.held): they are cancelled.
//
// Cancelling the context passed to Run does not cancel agents: it drains (Drain{}, finish the
// work in hand, deliver the results, wait for their acks, half-close). A Cancel from the
// coordinator cancels the agent's own context.
package hivegrid
