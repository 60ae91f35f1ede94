package hivegrid

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// maxQueuedProgress bounds the progress kept while disconnected; newer items are dropped.
const maxQueuedProgress = 10000

// refKey identifies an assignment: the whole ref, since a ref is never reused.
type refKey struct {
	runID, nodeID string
	attempt       uint32
	lease         uint64
}

func keyOf(r *pb.AssignmentRef) refKey {
	return refKey{r.GetRunId(), r.GetNodeId(), r.GetAttempt(), r.GetLease()}
}

type task struct {
	key       refKey
	ref       *pb.AssignmentRef
	cancel    context.CancelFunc
	cancelled bool   // a Cancel was delivered: a failure now answers OUTCOME_CANCELLED
	reason    string // why it was cancelled
	grace     *time.Timer
}

type pendingResult struct {
	seq  uint64 // finish order, so results go out (and are re-sent) in that order
	res  *pb.Result
	sent bool // sent on the current session, waiting for its Ack
}

type finishedTask struct {
	key refKey
	res *pb.Result
}

// runtime is the worker's state across sessions. Every field above mu is owned by the
// goroutine running Worker.Run; agents reach it only through the inbox below mu.
type runtime struct {
	cfg        config
	agents     map[string]AgentFunc
	log        *slog.Logger
	agentCtx   context.Context
	stopAgents context.CancelFunc

	running  map[refKey]*task
	waiting  []*pb.Assignment // beyond our slots; the coordinator's credits should prevent it
	results  map[refKey]*pendingResult
	seq      uint64
	progress []*pb.Progress
	draining bool

	drainExpired chan struct{} // closed when the drain timeout passes

	mu         sync.Mutex
	inResults  []finishedTask
	inProgress []*pb.Progress
	inExpired  []refKey // cancelled tasks whose grace period ended
	dropped    int
	wake       chan struct{} // capacity 1: "the inbox has something"
}

func newRuntime(ctx context.Context, cfg config, agents map[string]AgentFunc) *runtime {
	// Agents outlive Run's context: cancelling it drains, it does not abort work in hand.
	agentCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	return &runtime{
		cfg:          cfg,
		agents:       agents,
		log:          cfg.logger,
		agentCtx:     agentCtx,
		stopAgents:   stop,
		running:      map[refKey]*task{},
		results:      map[refKey]*pendingResult{},
		drainExpired: make(chan struct{}),
		wake:         make(chan struct{}, 1),
	}
}

func (rt *runtime) startDrainTimer() {
	if rt.cfg.drainTimeout > 0 {
		time.AfterFunc(rt.cfg.drainTimeout, func() { close(rt.drainExpired) })
	}
}

func (rt *runtime) abandon() error {
	rt.stopAgents()
	return fmt.Errorf("%w: abandoned %d running and %d unacked assignments",
		ErrDrainTimeout, len(rt.running)+len(rt.waiting), len(rt.results))
}

// idle reports whether the worker holds nothing the coordinator still waits for.
func (rt *runtime) idle() bool {
	return len(rt.running) == 0 && len(rt.waiting) == 0 && len(rt.results) == 0
}

// --- inbox: called from agent goroutines ---

func (rt *runtime) pushProgress(p *pb.Progress) {
	rt.mu.Lock()
	if len(rt.inProgress) < maxQueuedProgress {
		rt.inProgress = append(rt.inProgress, p)
	} else {
		rt.dropped++
	}
	rt.mu.Unlock()
	rt.signal()
}

func (rt *runtime) pushFinished(f finishedTask) {
	rt.mu.Lock()
	rt.inResults = append(rt.inResults, f)
	rt.mu.Unlock()
	rt.signal()
}

func (rt *runtime) pushGraceExpired(key refKey) {
	rt.mu.Lock()
	rt.inExpired = append(rt.inExpired, key)
	rt.mu.Unlock()
	rt.signal()
}

func (rt *runtime) signal() {
	select {
	case rt.wake <- struct{}{}:
	default:
	}
}

// takeInbox moves what agents produced into the runtime's own state.
func (rt *runtime) takeInbox() {
	rt.mu.Lock()
	finished, progress, expired, dropped := rt.inResults, rt.inProgress, rt.inExpired, rt.dropped
	rt.inResults, rt.inProgress, rt.inExpired, rt.dropped = nil, nil, nil, 0
	rt.mu.Unlock()
	if dropped > 0 {
		rt.log.Warn("hivegrid: progress queue full, items dropped", "dropped", dropped)
	}
	room := max(maxQueuedProgress-len(rt.progress), 0)
	if len(progress) > room {
		rt.log.Warn("hivegrid: progress queue full, items dropped", "dropped", len(progress)-room)
		progress = progress[:room]
	}
	rt.progress = append(rt.progress, progress...)
	for _, f := range finished {
		t := rt.running[f.key]
		if t == nil {
			continue // answered CANCELLED when its grace period ended: the late outcome is dropped
		}
		delete(rt.running, f.key)
		if t.grace != nil {
			t.grace.Stop()
		}
		res := f.res
		if t.cancelled && res.GetOutcome() == pb.Outcome_OUTCOME_FAILED {
			res = cancelledResult(t.ref, t.reason)
		}
		rt.addResult(f.key, res)
	}
	for _, key := range expired {
		if t := rt.running[key]; t != nil {
			rt.log.Warn("hivegrid: agent ignored its cancel; answered CANCELLED without it", "node", key.nodeID)
			delete(rt.running, key)
			rt.addResult(key, cancelledResult(t.ref, t.reason))
		}
	}
	for len(rt.waiting) > 0 && len(rt.running) < rt.cfg.slots {
		a := rt.waiting[0]
		rt.waiting = rt.waiting[1:]
		rt.start(a)
	}
}

func (rt *runtime) addResult(key refKey, res *pb.Result) {
	rt.seq++
	rt.results[key] = &pendingResult{seq: rt.seq, res: res}
}

// --- stimuli from the coordinator: the acks, cancels and assignments of a Push ---

func (rt *runtime) holds(key refKey) bool {
	if rt.running[key] != nil || rt.results[key] != nil {
		return true
	}
	return slices.ContainsFunc(rt.waiting, func(a *pb.Assignment) bool { return keyOf(a.GetRef()) == key })
}

func (rt *runtime) handleAssignments(items []*pb.Assignment) {
	for _, a := range items {
		if a.GetRef() == nil {
			rt.log.Error("hivegrid: assignment without ref ignored", "agent", a.GetAgent())
			continue
		}
		if rt.holds(keyOf(a.GetRef())) {
			rt.log.Warn("hivegrid: duplicate assignment ignored", "node", a.GetRef().GetNodeId())
			continue
		}
		if len(rt.running) < rt.cfg.slots {
			rt.start(a)
		} else {
			rt.waiting = append(rt.waiting, a)
		}
	}
}

func (rt *runtime) start(a *pb.Assignment) {
	key := keyOf(a.GetRef())
	fn, ok := rt.agents[a.GetAgent()]
	if !ok {
		rt.addResult(key, failedResult(a.GetRef(),
			fmt.Sprintf("worker %s does not run agent %q", rt.cfg.name, a.GetAgent()), false, "unknown_agent"))
		return
	}
	ctx, cancel := context.WithCancel(rt.agentCtx)
	rt.running[key] = &task{key: key, ref: a.GetRef(), cancel: cancel}
	node := newNode(a, rt)
	go func() {
		res := node.run(ctx, fn)
		cancel()
		rt.pushFinished(finishedTask{key: key, res: res})
	}()
}

func (rt *runtime) handleCancels(items []*pb.Cancel) {
	for _, c := range items {
		key := keyOf(c.GetRef())
		if t := rt.running[key]; t != nil {
			rt.cancelTask(t, c.GetReason())
			continue
		}
		if i := slices.IndexFunc(rt.waiting, func(a *pb.Assignment) bool { return keyOf(a.GetRef()) == key }); i >= 0 {
			rt.waiting = slices.Delete(rt.waiting, i, i+1)
			rt.addResult(key, cancelledResult(c.GetRef(), c.GetReason()))
		}
		// Otherwise we answered already, or never held it: no answer is due.
	}
}

// cancelTask cancels the agent's context. The slot is freed only by our answer, so an agent
// that ignores the cancel is answered for after the grace period (see WithCancelGrace).
func (rt *runtime) cancelTask(t *task, reason string) {
	if t.cancelled {
		return
	}
	t.cancelled, t.reason = true, reason
	t.cancel()
	key := t.key
	t.grace = time.AfterFunc(rt.cfg.cancelGrace, func() { rt.pushGraceExpired(key) })
}

// keepOnly applies Welcome.held after a reconnect: attempts the coordinator did not keep are
// stale. Running ones are cancelled (their answer will be acked STALE); queued ones, never
// started, are dropped. Unacked results are re-sent regardless: their acks settle them.
func (rt *runtime) keepOnly(kept []*pb.AssignmentRef) {
	keep := make(map[refKey]bool, len(kept))
	for _, r := range kept {
		keep[keyOf(r)] = true
	}
	for key, t := range rt.running {
		if !keep[key] {
			rt.cancelTask(t, "stale after reconnect")
		}
	}
	rt.waiting = slices.DeleteFunc(rt.waiting, func(a *pb.Assignment) bool { return !keep[keyOf(a.GetRef())] })
}

func cancelledResult(ref *pb.AssignmentRef, reason string) *pb.Result {
	message := "cancelled"
	if reason != "" {
		message += ": " + reason
	}
	return &pb.Result{Ref: ref, Outcome: pb.Outcome_OUTCOME_CANCELLED,
		Error: &pb.NodeError{Message: message, Retryable: false, Kind: "cancelled"}}
}

func (rt *runtime) handleAcks(items []*pb.Ack) {
	for _, a := range items {
		key := keyOf(a.GetRef())
		if _, ok := rt.results[key]; !ok {
			continue
		}
		delete(rt.results, key)
		switch a.GetStatus() {
		case pb.AckStatus_ACK_STATUS_MUTATIONS_REJECTED:
			rt.log.Warn("hivegrid: mutations rejected", "node", key.nodeID, "reason", a.GetMessage())
		case pb.AckStatus_ACK_STATUS_REFUSED:
			rt.log.Warn("hivegrid: result refused by a coordinator limit (the attempt failed)", "node", key.nodeID, "reason", a.GetMessage())
		case pb.AckStatus_ACK_STATUS_INVALID:
			rt.log.Error("hivegrid: coordinator found a result invalid (SDK bug)", "node", key.nodeID, "reason", a.GetMessage())
		case pb.AckStatus_ACK_STATUS_STALE:
			rt.log.Debug("hivegrid: stale result dropped", "node", key.nodeID)
		}
	}
}

// --- messages to the coordinator ---

func (rt *runtime) hello() *pb.ConnectRequest {
	held := make([]*pb.AssignmentRef, 0, len(rt.running)+len(rt.waiting)+len(rt.results))
	for _, t := range rt.running {
		held = append(held, t.ref)
	}
	for _, a := range rt.waiting {
		held = append(held, a.GetRef())
	}
	for _, r := range rt.results {
		held = append(held, r.res.GetRef())
	}
	return &pb.ConnectRequest{Msg: &pb.ConnectRequest_Hello{Hello: &pb.Hello{
		WorkerName:      rt.cfg.name,
		Language:        "go",
		SdkVersion:      SDKVersion,
		ProtocolVersion: ProtocolVersion,
		Agents:          slices.Sorted(maps.Keys(rt.agents)),
		Labels:          rt.cfg.labels,
		Slots:           uint32(rt.cfg.slots),
		Held:            held,
	}}}
}

// resetSent marks every unacked result as unsent: a new session must receive them again.
func (rt *runtime) resetSent() {
	for _, r := range rt.results {
		r.sent = false
	}
}

// limits are the coordinator's, from Welcome.
type limits struct {
	maxBatch int
	maxBytes int
}

// itemOverhead covers the tag and length prefix of one repeated item in a message.
const itemOverhead = 16

// nextProgress takes the longest prefix of the progress queue that fits in one message.
func (rt *runtime) nextProgress(l limits) *pb.ConnectRequest {
	var items []*pb.Progress
	size := 0
	for len(rt.progress) > 0 && len(items) < l.maxBatch {
		p := rt.progress[0]
		n := proto.Size(p) + itemOverhead
		if n > l.maxBytes {
			rt.log.Warn("hivegrid: progress item over max_message_bytes dropped", "node", p.GetRef().GetNodeId(), "bytes", n)
			rt.progress = rt.progress[1:]
			continue
		}
		if size+n > l.maxBytes {
			break
		}
		size += n
		items = append(items, p)
		rt.progress = rt.progress[1:]
	}
	if len(items) == 0 {
		return nil
	}
	return &pb.ConnectRequest{Msg: &pb.ConnectRequest_Progress{Progress: &pb.ProgressBatch{Items: items}}}
}

func (rt *runtime) hasUnsentResults() bool {
	for _, r := range rt.results {
		if !r.sent {
			return true
		}
	}
	return false
}

// nextResults takes the unsent results, oldest first, that fit in one message.
func (rt *runtime) nextResults(l limits) *pb.ConnectRequest {
	var unsent []*pendingResult
	for _, r := range rt.results {
		if !r.sent {
			unsent = append(unsent, r)
		}
	}
	slices.SortFunc(unsent, func(a, b *pendingResult) int { return cmp.Compare(a.seq, b.seq) })
	var items []*pb.Result
	size := 0
	for _, r := range unsent {
		if len(items) == l.maxBatch {
			break
		}
		n := proto.Size(r.res) + itemOverhead
		if n > l.maxBytes {
			// It can never be delivered: fail the attempt for good rather than loop.
			r.res = failedResult(r.res.GetRef(), fmt.Sprintf(
				"result of %d bytes exceeds the coordinator's max_message_bytes (%d)", n, l.maxBytes), false, "agent")
			n = proto.Size(r.res) + itemOverhead
		}
		if size+n > l.maxBytes {
			break
		}
		size += n
		r.sent = true
		items = append(items, r.res)
	}
	if len(items) == 0 {
		return nil
	}
	return &pb.ConnectRequest{Msg: &pb.ConnectRequest_Results{Results: &pb.Results{Items: items}}}
}
