// Package fakecoord is a scripted, in-process coordinator for the SDK's tests: a real gRPC
// server on loopback whose test drives every session by hand (welcome, assign, ack, cancel,
// kill, or any Push) and reads what the worker sent. Every wait has a timeout; nothing sleeps.
package fakecoord

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// Timeout bounds every wait of the helpers below.
const Timeout = 10 * time.Second

// Coordinator is the fake WorkerService.
type Coordinator struct {
	pb.UnimplementedWorkerServiceServer
	Addr     string
	sessions chan *Session
}

// Start serves a fake coordinator on 127.0.0.1 until the test ends; opts configure the gRPC
// server (grpc.Creds for TLS, say).
func Start(t testing.TB, opts ...grpc.ServerOption) *Coordinator {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	c := &Coordinator{Addr: lis.Addr().String(), sessions: make(chan *Session, 16)}
	srv := grpc.NewServer(opts...)
	pb.RegisterWorkerServiceServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return c
}

// NextSession waits for the next stream and returns it once its first message arrived.
func (c *Coordinator) NextSession(t testing.TB) *Session {
	t.Helper()
	select {
	case s := <-c.sessions:
		return s
	case <-time.After(Timeout):
		t.Fatalf("no worker session within %s", Timeout)
		return nil
	}
}

type op struct {
	msg *pb.ConnectResponse
	end error // with msg == nil: end the stream with this status
}

// Session is one worker stream.
type Session struct {
	// Hello is the stream's first message (nil if the first message was something else).
	Hello *pb.Hello
	// Metadata is what the worker sent with the stream (its headers).
	Metadata metadata.MD
	// Peer is the worker's end of the connection (its TLS state, when TLS is on).
	Peer    *peer.Peer
	in      chan *pb.ConnectRequest
	recvErr error // set before in is closed
	ops     chan op
}

// Connect implements WorkerService.
func (c *Coordinator) Connect(stream pb.WorkerService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	p, _ := peer.FromContext(stream.Context())
	s := &Session{Hello: first.GetHello(), Metadata: md, Peer: p,
		in: make(chan *pb.ConnectRequest, 4096), ops: make(chan op, 256)}
	c.sessions <- s
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				s.recvErr = err
				close(s.in)
				return
			}
			s.in <- m
		}
	}()
	for {
		select {
		case o := <-s.ops:
			if o.msg == nil {
				return o.end
			}
			if err := stream.Send(o.msg); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// Send queues m to the worker.
func (s *Session) Send(m *pb.ConnectResponse) { s.ops <- op{msg: m} }

// Welcome sends w. When w is nil: session id "s1", a long heartbeat, and every ref of
// Hello.held kept, as a coordinator whose leases all survived would answer.
func (s *Session) Welcome(w *pb.Welcome) {
	if w == nil {
		w = &pb.Welcome{SessionId: "s1", ProtocolVersion: uint32(pb.ProtocolConstant_PROTOCOL_CONSTANT_VERSION),
			HeartbeatIntervalS: 30, SessionTimeoutS: 90, Held: s.Hello.GetHeld()}
	}
	s.Send(&pb.ConnectResponse{Msg: &pb.ConnectResponse_Welcome{Welcome: w}})
}

// Refuse sends a Refusal and ends the stream.
func (s *Session) Refuse(reason string) {
	s.Send(&pb.ConnectResponse{Msg: &pb.ConnectResponse_Refusal{Refusal: &pb.Refusal{Reason: reason}}})
	s.ops <- op{end: nil}
}

// Push sends p: everything the coordinator has for the worker at once. The worker handles
// its acks, then its assignments, then its cancels.
func (s *Session) Push(p *pb.Push) {
	s.Send(&pb.ConnectResponse{Msg: &pb.ConnectResponse_Push{Push: p}})
}

// Assign sends a Push of assignments only.
func (s *Session) Assign(items ...*pb.Assignment) { s.Push(&pb.Push{Assignments: items}) }

// Ack sends a Push that acks refs with status.
func (s *Session) Ack(status pb.AckStatus, refs ...*pb.AssignmentRef) {
	s.Push(&pb.Push{Acks: Acks(status, refs...)})
}

// Cancel sends a Push that cancels refs.
func (s *Session) Cancel(refs ...*pb.AssignmentRef) { s.Push(&pb.Push{Cancels: Cancels(refs...)}) }

// RequestDrain sends a DrainRequest.
func (s *Session) RequestDrain() {
	s.Send(&pb.ConnectResponse{Msg: &pb.ConnectResponse_DrainRequest{DrainRequest: &pb.DrainRequest{}}})
}

// Kill ends the stream with UNAVAILABLE, as a coordinator restart would.
func (s *Session) Kill() {
	s.ops <- op{end: status.Error(codes.Unavailable, "fake coordinator killed the stream")}
}

// NextRaw returns the next message from the worker, heartbeats included.
func (s *Session) NextRaw(t testing.TB) *pb.ConnectRequest {
	t.Helper()
	select {
	case m, ok := <-s.in:
		if !ok {
			t.Fatalf("stream ended while a message was expected: %v", s.recvErr)
		}
		return m
	case <-time.After(Timeout):
		t.Fatalf("no message from the worker within %s", Timeout)
	}
	return nil
}

// Next returns the next message that is not a Heartbeat.
func (s *Session) Next(t testing.TB) *pb.ConnectRequest {
	t.Helper()
	for {
		if m := s.NextRaw(t); m.GetHeartbeat() == nil {
			return m
		}
	}
}

// Results reads messages until n results arrived and returns them with the number of
// Results messages they came in. Progress messages are skipped.
func (s *Session) Results(t testing.TB, n int) (results []*pb.Result, messages int) {
	t.Helper()
	for len(results) < n {
		m := s.Next(t)
		switch {
		case m.GetResults() != nil:
			results = append(results, m.GetResults().GetItems()...)
			messages++
		case m.GetProgress() != nil:
		default:
			t.Fatalf("expected results, got %v", m)
		}
	}
	if len(results) != n {
		t.Fatalf("expected %d results, got %d", n, len(results))
	}
	return results, messages
}

// AwaitHalfClose waits until the worker half-closes the stream (skipping heartbeats).
func (s *Session) AwaitHalfClose(t testing.TB) {
	t.Helper()
	for {
		select {
		case m, ok := <-s.in:
			if !ok {
				if !errors.Is(s.recvErr, io.EOF) {
					t.Fatalf("stream ended with %v, not a half-close", s.recvErr)
				}
				return
			}
			if m.GetHeartbeat() == nil {
				t.Fatalf("expected a half-close, got %v", m)
			}
		case <-time.After(Timeout):
			t.Fatalf("no half-close within %s", Timeout)
		}
	}
}

// End ends the stream with an OK status (after a worker's half-close).
func (s *Session) End() { s.ops <- op{end: nil} }

// Ref builds an assignment ref.
func Ref(run, node string, attempt uint32, lease uint64) *pb.AssignmentRef {
	return &pb.AssignmentRef{RunId: run, NodeId: node, Attempt: attempt, Lease: lease}
}

// Assignment builds an assignment for node with a JSON input and JSON dependency results.
func Assignment(ref *pb.AssignmentRef, agent, input string, deps ...*pb.DependencyResult) *pb.Assignment {
	return &pb.Assignment{Ref: ref, Agent: agent, Input: []byte(input), Deps: deps, CanMutate: true}
}

// Dep builds a dependency result.
func Dep(node, result string) *pb.DependencyResult {
	return &pb.DependencyResult{NodeId: node, Result: []byte(result)}
}

// Acks builds the acks of refs with status, for a Push.
func Acks(status pb.AckStatus, refs ...*pb.AssignmentRef) []*pb.Ack {
	acks := make([]*pb.Ack, 0, len(refs))
	for _, r := range refs {
		acks = append(acks, &pb.Ack{Ref: r, Status: status})
	}
	return acks
}

// Cancels builds the cancels of refs (reason "run_cancelled"), for a Push.
func Cancels(refs ...*pb.AssignmentRef) []*pb.Cancel {
	cs := make([]*pb.Cancel, 0, len(refs))
	for _, r := range refs {
		cs = append(cs, &pb.Cancel{Ref: r, Reason: "run_cancelled"})
	}
	return cs
}
