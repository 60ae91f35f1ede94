package hivegrid

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// Defaults for Welcome fields the coordinator leaves at zero (max_batch's is a protocol
// constant, in protocol.go).
const (
	defaultHeartbeat = 5 * time.Second
	defaultMaxBytes  = 4 << 20
)

type sessionOutcome struct {
	drained  bool // drain complete: Run returns nil
	welcomed bool // a Welcome arrived, so the backoff starts over
	err      error
}

type received struct {
	msg *pb.ConnectResponse
	err error
}

// runSession opens one stream and runs it until the drain completes or the stream fails.
func (rt *runtime) runSession(ctx context.Context, client pb.WorkerServiceClient) sessionOutcome {
	if ctx.Err() != nil {
		rt.draining = true
	}
	// The stream outlives ctx: a drain happens on it.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Connect(sctx)
	if err != nil {
		return sessionOutcome{err: fmt.Errorf("open stream: %w", err)}
	}
	rt.takeInbox()
	if err := stream.Send(rt.hello()); err != nil {
		return sessionOutcome{err: fmt.Errorf("send hello: %w", err)}
	}

	recvCh := make(chan received)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case recvCh <- received{m, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	welcome, err := rt.awaitWelcome(recvCh)
	if err != nil {
		return sessionOutcome{err: err}
	}
	if rt.cfg.onConnect != nil {
		rt.cfg.onConnect(welcome.GetSessionId())
	}
	rt.log.Info("hivegrid: connected", "session", welcome.GetSessionId(), "kept", len(welcome.GetHeld()))
	if v := welcome.GetProtocolVersion(); v != 0 && v != ProtocolVersion {
		rt.log.Warn("hivegrid: coordinator speaks another protocol version", "coordinator", v, "sdk", ProtocolVersion)
	}
	err = rt.serve(ctx, sctx, stream, recvCh, welcome)
	if errors.Is(err, errDrained) {
		return sessionOutcome{drained: true, welcomed: true}
	}
	return sessionOutcome{welcomed: true, err: err}
}

var errDrained = errors.New("drained")

func (rt *runtime) awaitWelcome(recvCh <-chan received) (*pb.Welcome, error) {
	timer := time.NewTimer(welcomeTimeout)
	defer timer.Stop()
	select {
	case r := <-recvCh:
		switch {
		case r.err != nil:
			return nil, fmt.Errorf("await welcome: %w", r.err)
		case r.msg.GetRefusal() != nil:
			return nil, &RefusedError{Reason: r.msg.GetRefusal().GetReason()}
		case r.msg.GetWelcome() != nil:
			return r.msg.GetWelcome(), nil
		default:
			return nil, fmt.Errorf("protocol error: first message is %T, not Welcome", r.msg.GetMsg())
		}
	case <-timer.C:
		return nil, fmt.Errorf("no Welcome within %s", welcomeTimeout)
	}
}

// serve is the runtime loop of one welcomed session. It returns errDrained after a completed
// drain, or why the session ended.
func (rt *runtime) serve(ctx, sctx context.Context, stream pb.WorkerService_ConnectClient,
	recvCh <-chan received, welcome *pb.Welcome) error {
	heartbeat := seconds(welcome.GetHeartbeatIntervalS(), defaultHeartbeat)
	sessionTimeout := seconds(welcome.GetSessionTimeoutS(), 3*heartbeat)
	lim := limits{maxBatch: defaultMaxBatch, maxBytes: defaultMaxBytes}
	if b := welcome.GetMaxBatch(); b > 0 {
		lim.maxBatch = int(b)
	}
	if b := welcome.GetMaxMessageBytes(); b > 0 {
		lim.maxBytes = int(b)
	}
	rt.takeInbox()
	rt.keepOnly(welcome.GetHeld())
	rt.resetSent()

	// One writer goroutine: stream.Send may block, and while it does, the loop keeps
	// gathering results for the next message. A nil message means half-close.
	sendCh := make(chan *pb.ConnectRequest)
	sentCh := make(chan error, 1)
	go func() {
		for {
			select {
			case m := <-sendCh:
				var err error
				if m == nil {
					err = stream.CloseSend()
				} else {
					err = stream.Send(m)
				}
				sentCh <- err
				if err != nil || m == nil {
					return
				}
			case <-sctx.Done():
				return
			}
		}
	}()

	writing, drainSent, halfClosed := false, false, false
	send := func(m *pb.ConnectRequest) {
		writing = true
		sendCh <- m
	}
	heartbeatTimer := time.NewTimer(heartbeat)
	defer heartbeatTimer.Stop()
	deadTimer := time.NewTimer(sessionTimeout)
	defer deadTimer.Stop()
	lingerTimer := time.NewTimer(time.Hour)
	lingerTimer.Stop()
	defer lingerTimer.Stop()
	lingering, lingered := false, false
	done := ctx.Done()
	if rt.draining {
		done = nil
	}

	for {
		if !writing && !halfClosed {
			switch {
			case rt.draining && !drainSent:
				drainSent = true
				send(&pb.ConnectRequest{Msg: &pb.ConnectRequest_Drain{Drain: &pb.Drain{}}})
			default:
				// Progress before results: an attempt's progress was queued before its result.
				if m := rt.nextProgress(lim); m != nil {
					send(m)
				} else if rt.hasUnsentResults() && len(rt.running) > 0 && !lingered {
					// Agents of the same batch tend to finish together: wait a moment for them
					// so that one message carries their results (a message costs far more than
					// an item in it).
					if !lingering {
						lingering = true
						lingerTimer.Reset(resultLinger)
					}
				} else if m := rt.nextResults(lim); m != nil {
					lingered = false
					send(m)
				} else if drainSent && rt.idle() && len(rt.progress) == 0 {
					halfClosed = true
					send(nil)
				}
			}
		}

		select {
		case <-done:
			done = nil
			rt.draining = true
		case r := <-recvCh:
			if r.err != nil {
				if halfClosed && errors.Is(r.err, io.EOF) {
					return errDrained
				}
				if errors.Is(r.err, io.EOF) {
					return errors.New("coordinator closed the stream")
				}
				return fmt.Errorf("receive: %w", r.err)
			}
			deadTimer.Reset(sessionTimeout)
			rt.handle(r.msg)
		case err := <-sentCh:
			writing = false
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
			heartbeatTimer.Reset(heartbeat)
		case <-rt.wake:
			rt.takeInbox()
		case <-lingerTimer.C:
			lingering, lingered = false, true
		case <-heartbeatTimer.C:
			if !writing && !halfClosed {
				send(&pb.ConnectRequest{Msg: &pb.ConnectRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
			} else {
				heartbeatTimer.Reset(heartbeat)
			}
		case <-deadTimer.C:
			if halfClosed {
				// The coordinator never ended the stream after our half-close; all is acked.
				return errDrained
			}
			return fmt.Errorf("nothing received for %s", sessionTimeout)
		case <-rt.drainExpired:
			return rt.abandon()
		}
	}
}

func (rt *runtime) handle(m *pb.ConnectResponse) {
	switch msg := m.GetMsg().(type) {
	case *pb.ConnectResponse_Push:
		// The protocol's order: acks, assignments, cancels. A cancel may name an assignment of
		// its own Push; handled first, it would find nothing and the agent would run to its end.
		rt.handleAcks(msg.Push.GetAcks())
		rt.handleAssignments(msg.Push.GetAssignments())
		rt.handleCancels(msg.Push.GetCancels())
	case *pb.ConnectResponse_DrainRequest:
		rt.log.Info("hivegrid: coordinator asked this worker to drain")
		rt.draining = true
	case *pb.ConnectResponse_Heartbeat:
	default:
		rt.log.Warn("hivegrid: unexpected message ignored", "type", fmt.Sprintf("%T", msg))
	}
}

func seconds(s float64, def time.Duration) time.Duration {
	if s <= 0 {
		return def
	}
	return time.Duration(s * float64(time.Second))
}
