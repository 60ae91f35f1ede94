// Package hivegrid is the Go worker SDK of Hivegrid: register agents on a Worker, then Run it
// against a coordinator.
//
//	w := hivegrid.NewWorker(hivegrid.WithName("images"), hivegrid.WithSlots(8))
//	w.Register("resize", func(ctx context.Context, n *hivegrid.Node) (any, error) { ... })
//	err := w.Run(ctx, "127.0.0.1:7070") // returns nil after a graceful drain once ctx is done
//
// # Theory of operation
//
// A Worker keeps one bidirectional stream (WorkerService/Connect) open. One goroutine, the
// runtime loop, owns all session state: the running tasks, the finished results waiting for
// their Ack, and the progress queue. Agents run on their own goroutines and hand their
// progress and results to the loop through a mutex-guarded inbox, so an agent never blocks on
// the network. A single writer goroutine performs stream.Send; while it is busy, results and
// progress accumulate and go out together in the next message, which is what batches them.
// The coordinator batches too: each Push it sends carries acks, cancels and new assignments,
// which the loop applies in that order.
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
