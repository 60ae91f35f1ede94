package hivegrid

import (
	"errors"
	"fmt"
)

// nonRetryable marks an agent error that the coordinator must not retry.
type nonRetryable struct{ err error }

func (e *nonRetryable) Error() string { return e.err.Error() }
func (e *nonRetryable) Unwrap() error { return e.err }

// NonRetryable wraps err so that an agent returning it fails its node for good (no retry).
// Errors are retryable by default. NonRetryable(nil) is nil.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &nonRetryable{err: err}
}

// IsNonRetryable reports whether err (or an error it wraps) was made with NonRetryable.
func IsNonRetryable(err error) bool {
	var nr *nonRetryable
	return errors.As(err, &nr)
}

// RefusedError is returned by Worker.Run when the coordinator refuses the Hello (for example
// an unsupported protocol version). Retrying with the same configuration cannot succeed.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string {
	return fmt.Sprintf("hivegrid: coordinator refused the worker: %s", e.Reason)
}

// ErrDrainTimeout is returned by Worker.Run when a drain did not finish within the drain
// timeout (see WithDrainTimeout); the agents still running were cancelled.
var ErrDrainTimeout = errors.New("hivegrid: drain did not finish in time")

// ErrNodeFinished is returned by Node.Progress once the agent has returned.
var ErrNodeFinished = errors.New("hivegrid: node already finished")
