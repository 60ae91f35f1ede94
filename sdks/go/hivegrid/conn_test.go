package hivegrid_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
	fc "github.com/hivegrid/hivegrid/sdks/go/internal/fakecoord"
)

// A worker given the CA of a coordinator served over TLS completes the handshake, and its
// token arrives as the stream's authorization metadata.
func TestWorkerOverTLSWithToken(t *testing.T) {
	certs := fc.NewCerts(t)
	c := fc.Start(t, grpc.Creds(credentials.NewTLS(certs.ServerTLS(false))))
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle},
		hivegrid.WithTLS(hivegrid.TLS{CAFile: certs.CAFile}), hivegrid.WithToken("s3cret"))
	s := c.NextSession(t)
	if s.Hello == nil {
		t.Fatal("no Hello over TLS")
	}
	if got := s.Metadata.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
		t.Fatalf("authorization metadata %q, want [Bearer s3cret]", got)
	}
	info, ok := s.Peer.AuthInfo.(credentials.TLSInfo)
	if !ok || info.State.Version < tls.VersionTLS12 {
		t.Fatalf("the stream is not TLS: %v", s.Peer.AuthInfo)
	}
	s.Welcome(nil)
	s.Assign(fc.Assignment(fc.Ref("r", "n", 1, 1), "a", "null"))
	if res, _ := s.Results(t, 1); res[0].GetOutcome() != pb.Outcome_OUTCOME_SUCCEEDED {
		t.Fatalf("result over TLS: %v", res[0])
	}
}

// A coordinator that demands a client certificate (mutual TLS) sees the worker's.
func TestWorkerMutualTLS(t *testing.T) {
	certs := fc.NewCerts(t)
	c := fc.Start(t, grpc.Creds(credentials.NewTLS(certs.ServerTLS(true))))
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle}, hivegrid.WithTLS(hivegrid.TLS{
		CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}))
	s := c.NextSession(t)
	info, ok := s.Peer.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 ||
		info.State.PeerCertificates[0].Subject.CommonName != certs.ClientName {
		t.Fatalf("coordinator saw no client certificate %q: %v", certs.ClientName, s.Peer.AuthInfo)
	}
	if s.Metadata.Get("authorization") != nil {
		t.Fatalf("authorization sent without WithToken: %v", s.Metadata)
	}
}

// WithTLSConfig takes a tls.Config for what files cannot say (here: roots held in memory).
func TestWorkerWithTLSConfig(t *testing.T) {
	certs := fc.NewCerts(t)
	c := fc.Start(t, grpc.Creds(credentials.NewTLS(certs.ServerTLS(false))))
	pemData, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemData)
	startWorker(t, c, map[string]hivegrid.AgentFunc{"a": idle}, hivegrid.WithTLSConfig(&tls.Config{RootCAs: roots}))
	if s := c.NextSession(t); s.Hello.GetWorkerName() != "test" {
		t.Fatalf("hello %v", s.Hello)
	}
}

// A TLS or token mistake is a clear error from Run (and Dial), not endless reconnects.
func TestBadConnectionOptionsFailAtOnce(t *testing.T) {
	dir := t.TempDir()
	notPEM := dir + "/ca.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		opt  hivegrid.ConnOption
		want string
	}{
		"missing CA":    {hivegrid.WithTLS(hivegrid.TLS{CAFile: dir + "/nope.pem"}), "TLS CA file"},
		"CA not PEM":    {hivegrid.WithTLS(hivegrid.TLS{CAFile: notPEM}), "holds no PEM certificate"},
		"cert, no key":  {hivegrid.WithTLS(hivegrid.TLS{CertFile: notPEM}), "both CertFile and KeyFile"},
		"empty token":   {hivegrid.WithToken(""), "token is empty"},
		"token newline": {hivegrid.WithToken("a\nb"), "line break"},
	}
	for name, tc := range cases {
		w := hivegrid.NewWorker(hivegrid.WithLogger(quiet), tc.opt)
		if err := w.Register("a", idle); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), fc.Timeout)
		err := w.Run(ctx, "127.0.0.1:1")
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Run returned %v, want an error about %q", name, err, tc.want)
		}
		if _, err := hivegrid.Dial("127.0.0.1:1", tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Dial returned %v, want an error about %q", name, err, tc.want)
		}
	}
	both := []hivegrid.Option{hivegrid.WithTLS(hivegrid.TLS{}), hivegrid.WithTLSConfig(&tls.Config{})}
	w := hivegrid.NewWorker(both...)
	if err := w.Register("a", idle); err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background(), "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Errorf("WithTLS and WithTLSConfig together: %v", err)
	}
}

func TestRegisterRefusesDuplicatesAndBlanks(t *testing.T) {
	w := hivegrid.NewWorker()
	if err := w.Register("x", idle); err != nil {
		t.Fatal(err)
	}
	if err := w.Register("x", idle); err == nil || err.Error() != `hivegrid: agent "x" is already registered` {
		t.Fatalf("second registration of x: %v", err)
	}
	if err := w.Register("", idle); err == nil {
		t.Fatal("an agent without a name was registered")
	}
	if err := w.Register("y", nil); err == nil {
		t.Fatal("a nil agent function was registered")
	}
}

// The defaults come from the proto's ProtocolConstant: slots in the Hello, and the cancel
// grace after which a deaf agent is answered for.
func TestProtocolDefaults(t *testing.T) {
	if hivegrid.ProtocolVersion != uint32(pb.ProtocolConstant_PROTOCOL_CONSTANT_VERSION) ||
		hivegrid.DefaultSlots != int(pb.ProtocolConstant_PROTOCOL_CONSTANT_DEFAULT_SLOTS) ||
		hivegrid.DefaultCancelGrace != time.Duration(pb.ProtocolConstant_PROTOCOL_CONSTANT_CANCEL_GRACE_MS)*time.Millisecond {
		t.Fatalf("constants %d %d %s differ from the proto's", hivegrid.ProtocolVersion, hivegrid.DefaultSlots, hivegrid.DefaultCancelGrace)
	}
	c := fc.Start(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	startWorker(t, c, map[string]hivegrid.AgentFunc{"deaf": func(context.Context, *hivegrid.Node) (any, error) {
		<-release
		return "late", nil
	}})
	s := c.NextSession(t)
	if got := s.Hello.GetSlots(); got != uint32(hivegrid.DefaultSlots) || s.Hello.GetProtocolVersion() != hivegrid.ProtocolVersion {
		t.Fatalf("hello slots %d version %d", got, s.Hello.GetProtocolVersion())
	}
	s.Welcome(nil)
	ref := fc.Ref("r", "n", 1, 1)
	start := time.Now()
	s.Push(&pb.Push{Assignments: []*pb.Assignment{fc.Assignment(ref, "deaf", "null")}, Cancels: fc.Cancels(ref)})
	res, _ := s.Results(t, 1)
	if res[0].GetOutcome() != pb.Outcome_OUTCOME_CANCELLED {
		t.Fatalf("answer for a deaf agent: %v", res[0])
	}
	// Not a timing threshold on the machine's speed: the answer cannot come before the grace.
	if waited := time.Since(start); waited < hivegrid.DefaultCancelGrace {
		t.Fatalf("answered CANCELLED after %s, before the grace of %s", waited, hivegrid.DefaultCancelGrace)
	}
}

// runService is a RunService on loopback that answers SubmitRun with UNAVAILABLE a given
// number of times first, and GetRun with a small run; it records what each call carried.
type runService struct {
	pb.UnimplementedRunServiceServer
	mu          sync.Mutex
	unavailable int
	requestIDs  []string
	auth        [][]string
	peers       []*peer.Peer
}

func (s *runService) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	p, _ := peer.FromContext(ctx)
	s.auth = append(s.auth, md.Get("authorization"))
	s.peers = append(s.peers, p)
}

func (s *runService) SubmitRun(ctx context.Context, req *pb.SubmitRunRequest) (*pb.SubmitRunResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(ctx)
	s.requestIDs = append(s.requestIDs, req.GetRequestId())
	if s.unavailable > 0 {
		s.unavailable--
		return nil, status.Error(codes.Unavailable, "the store is busy")
	}
	return &pb.SubmitRunResponse{RunId: "run-1"}, nil
}

func (s *runService) GetRun(ctx context.Context, req *pb.GetRunRequest) (*pb.GetRunResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(ctx)
	return &pb.GetRunResponse{Run: &pb.RunInfo{RunId: req.GetRunId(), State: pb.RunState_RUN_STATE_SUCCEEDED}}, nil
}

func serveRuns(t *testing.T, svc *runService, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterRunServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// The client takes the same TLS and token options as the worker: over mutual TLS, each call
// carries the token.
func TestClientOverMutualTLSWithToken(t *testing.T) {
	certs := fc.NewCerts(t)
	svc := &runService{}
	addr := serveRuns(t, svc, grpc.Creds(credentials.NewTLS(certs.ServerTLS(true))))
	c, err := hivegrid.Dial(addr, hivegrid.WithToken("s3cret"), hivegrid.WithTLS(hivegrid.TLS{
		CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fc.Timeout)
	defer cancel()
	run, err := c.Get(ctx, "r1")
	if err != nil || run.ID != "r1" || run.State != hivegrid.RunSucceeded {
		t.Fatalf("Get over TLS: %+v, %v", run, err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if len(svc.auth) != 1 || !slices.Equal(svc.auth[0], []string{"Bearer s3cret"}) {
		t.Fatalf("authorization metadata %q", svc.auth)
	}
	info, ok := svc.peers[0].AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 || info.State.PeerCertificates[0].Subject.CommonName != certs.ClientName {
		t.Fatalf("no client certificate: %v", svc.peers[0].AuthInfo)
	}
}

// Submit retries an UNAVAILABLE answer with the same request id, so that the coordinator
// can tell a retry from a second run.
func TestSubmitRetriesWithOneRequestID(t *testing.T) {
	svc := &runService{unavailable: 2}
	c, err := hivegrid.Dial(serveRuns(t, svc))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fc.Timeout)
	defer cancel()
	g := hivegrid.NewGraph("retry")
	g.Node("echo", nil)
	id, err := c.Submit(ctx, g)
	if err != nil || id != "run-1" {
		t.Fatalf("Submit: %q, %v", id, err)
	}
	if _, err := c.Submit(ctx, g); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	ids := svc.requestIDs
	if len(ids) != 4 || ids[0] == "" || ids[0] != ids[1] || ids[1] != ids[2] || ids[3] == ids[0] {
		t.Fatalf("request ids %q: want one id for the three tries of the first Submit, another for the second", ids)
	}
}
