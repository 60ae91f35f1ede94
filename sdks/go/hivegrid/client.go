package hivegrid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	mrand "math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// Client submits runs to a coordinator and follows them. It is safe for concurrent use.
//
//	c, err := hivegrid.Dial("127.0.0.1:50051")
//	runID, err := c.Submit(ctx, g)
//	run, err := c.Wait(ctx, runID)
//
// A coordinator that is unreachable (restarting, say) is retried with backoff for up to
// RetryWindow before a call gives up; every call is also bounded by its context.
type Client struct {
	conn *grpc.ClientConn
	runs pb.RunServiceClient
}

// RetryWindow is how long a Client call keeps retrying a coordinator that answers
// UNAVAILABLE (or cannot be reached) before it returns the error.
const RetryWindow = 30 * time.Second

// ClientOption configures a Client: the ConnOptions (WithTLS, WithToken, ...) it shares with
// the Worker.
type ClientOption interface{ applyClient(*clientConfig) }

type clientConfig struct {
	conn connConfig
}

// Errors a Client call may wrap (test with errors.Is).
var (
	// ErrNotFound: the coordinator has no run (or worker) of that id.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the coordinator refused the request as malformed (a cycle in a graph, an
	// unknown dependency, a duplicate id...); the message says what.
	ErrInvalid = errors.New("invalid request")
)

// Dial returns a Client of the coordinator at addr (host:port). It connects lazily: only a
// bad configuration (an unreadable certificate, say) fails here.
func Dial(addr string, opts ...ClientOption) (*Client, error) {
	var cfg clientConfig
	for _, o := range opts {
		o.applyClient(&cfg)
	}
	conn, err := cfg.conn.dial(addr)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, runs: pb.NewRunServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Submit starts a run of g and returns its id. A retry after a lost answer cannot start the
// run twice: each Submit carries a request id of its own that the coordinator deduplicates.
func (c *Client) Submit(ctx context.Context, g *Graph) (string, error) {
	req, err := g.request()
	if err != nil {
		return "", err
	}
	req.RequestId = newRequestID()
	var resp *pb.SubmitRunResponse
	err = retry(ctx, func() (err error) {
		resp, err = c.runs.SubmitRun(ctx, req)
		return err
	})
	if err != nil {
		return "", callErr(ctx, "submit run "+g.Name, err)
	}
	return resp.GetRunId(), nil
}

// Get returns the run runID with all its nodes and their results.
func (c *Client) Get(ctx context.Context, runID string) (*Run, error) {
	run, err := c.get(ctx, runID, false, 0)
	if err != nil {
		return nil, callErr(ctx, "get run "+runID, err)
	}
	return run, nil
}

// get fetches every page of a run (or the first only, when pageSize is set).
func (c *Client) get(ctx context.Context, runID string, omitResults bool, pageSize uint32) (*Run, error) {
	var run *Run
	token := ""
	for {
		req := &pb.GetRunRequest{RunId: runID, OmitResults: omitResults, PageSize: pageSize, PageToken: token}
		var page *pb.GetRunResponse
		err := retry(ctx, func() (err error) {
			page, err = c.runs.GetRun(ctx, req)
			return err
		})
		if err != nil {
			return nil, err
		}
		if run == nil {
			run = runOf(page.GetRun())
		}
		for _, n := range page.GetNodes() {
			run.Nodes = append(run.Nodes, nodeStatusOf(n))
		}
		token = page.GetNextPageToken()
		if token == "" || pageSize > 0 {
			return run, nil
		}
	}
}

// Watch yields the events of run runID that follow afterSeq (0: from the first), in order,
// until the run's run_ended event. A broken stream (a coordinator restart) is resumed from
// the last event yielded, so no event is missed or yielded twice. An error ends the
// sequence, yielded with a zero Event. Breaking out of the loop ends the watch.
//
//	for ev, err := range c.Watch(ctx, runID, 0) {
//		if err != nil { ... }
//		fmt.Println(ev.Seq, ev.Kind, ev.NodeID)
//	}
func (c *Client) Watch(ctx context.Context, runID string, afterSeq uint64) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		next := afterSeq + 1
		var b unavailable
		for {
			done, err := c.watchOnce(ctx, runID, &next, &b, yield)
			if done {
				return
			}
			if !b.retry(ctx, err) {
				yield(Event{}, callErr(ctx, "watch run "+runID, err))
				return
			}
		}
	}
}

// watchOnce runs one WatchRun stream from *next on. It returns done when the watch is over
// (the run ended, or the caller stopped), else why the stream broke.
func (c *Client) watchOnce(ctx context.Context, runID string, next *uint64, b *unavailable,
	yield func(Event, error) bool) (done bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.runs.WatchRun(wctx, &pb.WatchRunRequest{RunId: runID, FromSeq: *next})
	if err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The coordinator ends a watch after run_ended, or at once when the run ended
			// before afterSeq: nothing more will come.
			return true, nil
		}
		if err != nil {
			return false, err
		}
		b.reached()
		for _, e := range resp.GetEvents() {
			if e.GetSeq() < *next {
				continue
			}
			*next = e.GetSeq() + 1
			ev := eventOf(e)
			if !yield(ev, nil) || ev.Kind == EventRunEnded {
				return true, nil
			}
		}
	}
}

// Cancel cancels run runID (its running nodes are cancelled on their workers) and returns
// the run's state: cancelled, or how it ended if it had ended already.
func (c *Client) Cancel(ctx context.Context, runID, reason string) (RunState, error) {
	var resp *pb.CancelRunResponse
	err := retry(ctx, func() (err error) {
		resp, err = c.runs.CancelRun(ctx, &pb.CancelRunRequest{RunId: runID, Reason: reason})
		return err
	})
	if err != nil {
		return "", callErr(ctx, "cancel run "+runID, err)
	}
	return runStateOf(resp.GetState()), nil
}

// Wait waits until run runID ends and returns it, with all its nodes and their results.
func (c *Client) Wait(ctx context.Context, runID string) (*Run, error) {
	for {
		info, err := c.get(ctx, runID, true, 1)
		if err != nil {
			return nil, callErr(ctx, "wait for run "+runID, err)
		}
		if !info.State.Ended() {
			for ev, err := range c.Watch(ctx, runID, info.LastSeq) {
				if err != nil {
					return nil, err
				}
				if ev.Kind == EventRunEnded {
					break
				}
			}
		}
		run, err := c.Get(ctx, runID)
		if err != nil || run.State.Ended() {
			return run, err
		}
	}
}

// retry calls f until it succeeds, fails otherwise than UNAVAILABLE, ctx is done, or the
// coordinator has been unavailable for RetryWindow.
func retry(ctx context.Context, f func() error) error {
	var b unavailable
	for {
		err := f()
		if !b.retry(ctx, err) {
			return err
		}
	}
}

// unavailable paces the retries of calls that the coordinator answered UNAVAILABLE.
type unavailable struct {
	delay time.Duration
	since time.Time
}

// retry reports whether to call again after err, once a backoff delay has passed.
func (u *unavailable) retry(ctx context.Context, err error) bool {
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		return false
	}
	if u.since.IsZero() {
		u.since, u.delay = time.Now(), initialBackoff
	}
	wait := u.delay/2 + mrand.N(u.delay/2+1)
	if time.Since(u.since)+wait > RetryWindow {
		return false
	}
	u.delay = min(u.delay*2, maxBackoff)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// reached records that the coordinator answered: the next outage is paced afresh.
func (u *unavailable) reached() { u.since = time.Time{} }

func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// callError is a failed Client call: what was asked, and the coordinator's answer.
type callError struct {
	op  string
	err error
}

func (e *callError) Error() string {
	if s, ok := status.FromError(e.err); ok {
		return fmt.Sprintf("hivegrid: %s: %s (%s)", e.op, s.Message(), s.Code())
	}
	return fmt.Sprintf("hivegrid: %s: %v", e.op, e.err)
}

func (e *callError) Unwrap() error { return e.err }

func (e *callError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return status.Code(e.err) == codes.NotFound
	case ErrInvalid:
		return status.Code(e.err) == codes.InvalidArgument
	}
	return false
}

// callErr wraps err; when ctx ended the call, its error is what errors.Is finds.
func callErr(ctx context.Context, op string, err error) error {
	var ce *callError
	if errors.As(err, &ce) {
		return err
	}
	if ctx.Err() != nil {
		return &callError{op: op, err: ctx.Err()}
	}
	return &callError{op: op, err: err}
}
