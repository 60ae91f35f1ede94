package hivegrid

import (
	"time"

	pb "github.com/hivegrid/hivegrid/sdks/go/gen/hivegrid/v1"
)

// The protocol's constants come from protos/hivegrid/v1/worker.proto (enum ProtocolConstant)
// through the generated code, so that the coordinator and every SDK share one copy.

// ProtocolVersion is the worker protocol version this SDK speaks (Hello.protocol_version).
const ProtocolVersion = uint32(pb.ProtocolConstant_PROTOCOL_CONSTANT_VERSION)

// DefaultSlots is how many agents a Worker runs at once unless WithSlots says otherwise.
const DefaultSlots = int(pb.ProtocolConstant_PROTOCOL_CONSTANT_DEFAULT_SLOTS)

// DefaultCancelGrace is how long a cancelled agent may take to return before the worker
// answers OUTCOME_CANCELLED for it (see WithCancelGrace).
const DefaultCancelGrace = time.Duration(pb.ProtocolConstant_PROTOCOL_CONSTANT_CANCEL_GRACE_MS) * time.Millisecond

const (
	// welcomeTimeout: a stream whose Welcome does not come in time is dropped and reconnected.
	welcomeTimeout = time.Duration(pb.ProtocolConstant_PROTOCOL_CONSTANT_WELCOME_TIMEOUT_MS) * time.Millisecond
	// defaultMaxBatch stands for a Welcome.max_batch of 0.
	defaultMaxBatch = int(pb.ProtocolConstant_PROTOCOL_CONSTANT_MAX_BATCH)
	// resultLinger is how long finished results wait for others still running before they
	// are sent, so that results finishing together share one message.
	resultLinger = time.Duration(pb.ProtocolConstant_PROTOCOL_CONSTANT_BATCH_WINDOW_US) * time.Microsecond
	// Reconnecting is cheap (a refused connect); a short ceiling gets work going again soon
	// after a coordinator restart.
	initialBackoff = time.Duration(pb.ProtocolConstant_PROTOCOL_CONSTANT_RECONNECT_FIRST_MS) * time.Millisecond
	maxBackoff     = time.Duration(pb.ProtocolConstant_PROTOCOL_CONSTANT_RECONNECT_MAX_MS) * time.Millisecond
)
