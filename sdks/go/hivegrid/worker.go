package hivegrid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// SDKVersion is sent in Hello.sdk_version.
const SDKVersion = "0.1.0"

// ProtocolVersion is the worker protocol version this SDK speaks.
const ProtocolVersion = 2

// Reconnecting is cheap (a refused connect); a short ceiling gets work going again soon after
// a coordinator restart.
const (
	initialBackoff = 50 * time.Millisecond
	maxBackoff     = 1 * time.Second
)

// Worker runs registered agents for a coordinator. Create it with NewWorker, Register its
// agents, then call Run. A Worker may be Run once at a time.
type Worker struct {
	cfg config

	mu     sync.Mutex
	agents map[string]AgentFunc
}

type config struct {
	name             string
	slots            int
	labels           map[string]string
	logger           *slog.Logger
	onConnect        func(sessionID string)
	dialOptions      []grpc.DialOption
	drainTimeout     time.Duration
	handshakeTimeout time.Duration
	cancelGrace      time.Duration
}

// Option configures a Worker.
type Option func(*config)

// WithName sets the worker name operators see (default "go-worker").
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithSlots sets how many agents run at once (default 4; values below 1 count as 1).
func WithSlots(n int) Option { return func(c *config) { c.slots = max(n, 1) } }

// WithLabels sets the labels nodes can require of this worker.
func WithLabels(labels map[string]string) Option {
	return func(c *config) { c.labels = maps.Clone(labels) }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithOnConnect sets a function called with the session id on every Welcome.
func WithOnConnect(f func(sessionID string)) Option { return func(c *config) { c.onConnect = f } }

// WithDialOptions adds gRPC dial options (credentials, interceptors...). By default the
// connection is plaintext.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// WithDrainTimeout bounds a drain: if the work in hand is not finished, delivered and acked
// this long after Run's context is done, the remaining agents are cancelled and Run returns
// ErrDrainTimeout. Zero (the default) waits as long as it takes.
func WithDrainTimeout(d time.Duration) Option { return func(c *config) { c.drainTimeout = d } }

// WithCancelGrace sets how long a cancelled agent may ignore its cancelled context before
// the worker answers OUTCOME_CANCELLED for it and drops its late outcome (default 10 s). The
// coordinator frees the slot only on that answer.
func WithCancelGrace(d time.Duration) Option { return func(c *config) { c.cancelGrace = d } }

// NewWorker returns a Worker with no agents.
func NewWorker(opts ...Option) *Worker {
	cfg := config{name: "go-worker", slots: 4, logger: slog.Default(), handshakeTimeout: 10 * time.Second,
		cancelGrace: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	return &Worker{cfg: cfg, agents: map[string]AgentFunc{}}
}

// Register makes the worker run agent name with fn, replacing any earlier registration.
// Registrations made after Run started take effect at the next Run.
func (w *Worker) Register(name string, fn AgentFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.agents[name] = fn
}

// Run connects to the coordinator at addr (host:port) and runs assignments until ctx is done
// or the coordinator asks the worker to drain, then drains and returns nil. A broken stream
// is reconnected with jittered exponential backoff (0.05 s doubling to 1 s), forever. Run
// returns an error only when it cannot go on: a *RefusedError, ErrDrainTimeout, or a
// configuration error.
func (w *Worker) Run(ctx context.Context, addr string) error {
	w.mu.Lock()
	agents := maps.Clone(w.agents)
	w.mu.Unlock()
	if len(agents) == 0 {
		return errors.New("hivegrid: no agents registered")
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's own reconnect backoff (1 s base, 120 s cap) would dominate ours.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: initialBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20)),
	}, w.cfg.dialOptions...)
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return fmt.Errorf("hivegrid: dial %s: %w", addr, err)
	}
	defer conn.Close()
	client := pb.NewWorkerServiceClient(conn)

	rt := newRuntime(ctx, w.cfg, agents)
	defer rt.stopAgents()
	stopDrainTimer := context.AfterFunc(ctx, rt.startDrainTimer)
	defer stopDrainTimer()

	delay := initialBackoff
	for {
		out := rt.runSession(ctx, client)
		switch {
		case out.drained:
			return nil
		case out.err == nil:
			// Unreachable: a session ends drained or with an error.
		case errors.As(out.err, new(*RefusedError)), errors.Is(out.err, ErrDrainTimeout):
			return out.err
		}
		if out.welcomed {
			delay = initialBackoff
		}
		rt.takeInbox()
		if ctx.Err() != nil && rt.idle() {
			// Stopped while disconnected with nothing in hand: nothing left to drain.
			return nil
		}
		wait := delay/2 + rand.N(delay/2+1)
		w.cfg.logger.Warn("hivegrid: stream lost, reconnecting", "err", out.err, "in", wait)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-rt.drainExpired:
			timer.Stop()
			return rt.abandon()
		}
		delay = min(delay*2, maxBackoff)
	}
}
