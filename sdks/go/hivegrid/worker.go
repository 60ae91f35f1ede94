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

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// SDKVersion is sent in Hello.sdk_version.
const SDKVersion = "0.1.0"

// Worker runs registered agents for a coordinator. Create it with NewWorker, Register its
// agents, then call Run. A Worker may be Run once at a time.
type Worker struct {
	cfg config

	mu     sync.Mutex
	agents map[string]AgentFunc
}

type config struct {
	name         string
	slots        int
	labels       map[string]string
	logger       *slog.Logger
	onConnect    func(sessionID string)
	conn         connConfig
	drainTimeout time.Duration
	cancelGrace  time.Duration
}

// Option configures a Worker: the options below, and the ConnOptions (WithTLS, WithToken,
// WithDialOptions, ...) it shares with Dial.
type Option interface{ applyWorker(*config) }

type workerOption func(*config)

func (o workerOption) applyWorker(c *config) { o(c) }

// WithName sets the worker name operators see (default "go-worker").
func WithName(name string) Option { return workerOption(func(c *config) { c.name = name }) }

// WithSlots sets how many agents run at once (default DefaultSlots; values below 1 count as 1).
func WithSlots(n int) Option { return workerOption(func(c *config) { c.slots = max(n, 1) }) }

// WithLabels sets the labels nodes can require of this worker.
func WithLabels(labels map[string]string) Option {
	return workerOption(func(c *config) { c.labels = maps.Clone(labels) })
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return workerOption(func(c *config) { c.logger = l }) }

// WithOnConnect sets a function called with the session id on every Welcome.
func WithOnConnect(f func(sessionID string)) Option {
	return workerOption(func(c *config) { c.onConnect = f })
}

// WithDrainTimeout bounds a drain: if the work in hand is not finished, delivered and acked
// this long after Run's context is done, the remaining agents are cancelled and Run returns
// ErrDrainTimeout. Zero (the default) waits as long as it takes.
func WithDrainTimeout(d time.Duration) Option {
	return workerOption(func(c *config) { c.drainTimeout = max(d, 0) })
}

// WithCancelGrace sets how long a cancelled agent may ignore its cancelled context before
// the worker answers OUTCOME_CANCELLED for it and drops its late outcome (default
// DefaultCancelGrace, the protocol's). The coordinator frees the slot only on that answer.
func WithCancelGrace(d time.Duration) Option {
	return workerOption(func(c *config) { c.cancelGrace = max(d, 0) })
}

// NewWorker returns a Worker with no agents.
func NewWorker(opts ...Option) *Worker {
	cfg := config{name: "go-worker", slots: DefaultSlots, logger: slog.Default(), cancelGrace: DefaultCancelGrace}
	for _, o := range opts {
		o.applyWorker(&cfg)
	}
	return &Worker{cfg: cfg, agents: map[string]AgentFunc{}}
}

// Register makes the worker run agent name with fn. Registering a name twice is an error
// (the second registration would silently win), and so are an empty name and a nil fn.
// Registrations made after Run started take effect at the next Run.
func (w *Worker) Register(name string, fn AgentFunc) error {
	if name == "" {
		return errors.New("hivegrid: an agent needs a name")
	}
	if fn == nil {
		return fmt.Errorf("hivegrid: agent %q has a nil function", name)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.agents[name]; ok {
		return fmt.Errorf("hivegrid: agent %q is already registered", name)
	}
	w.agents[name] = fn
	return nil
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
	conn, err := w.cfg.conn.dial(addr)
	if err != nil {
		return err
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
