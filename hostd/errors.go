package hostd

import (
	"errors"
	"fmt"

	"github.com/glancegw/glancegw/hostd/transfer"
)

// Kinds of failure the API distinguishes. Handlers and the daemon wrap them
// with what was being done; only the HTTP edge (writeError) turns them into
// status codes, and the client turns status codes back into them.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("backend unavailable")

	// ErrDaemonUnreachable is returned by Client when nothing answers on the
	// socket.
	ErrDaemonUnreachable = errors.New("daemon unreachable")
	// ErrAlreadyRunning is returned by Run when another daemon answers on the
	// API socket.
	ErrAlreadyRunning = errors.New("another daemon is answering on the socket")
)

// kindError carries a user-facing message and one of the kinds above, so the
// message is not prefixed with the kind's own text.
type kindError struct {
	kind error
	msg  string
	err  error // cause, may be nil
}

func (e *kindError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

// Unwrap exposes both the kind and the cause to errors.Is/As.
func (e *kindError) Unwrap() []error {
	if e.err != nil {
		return []error{e.kind, e.err}
	}
	return []error{e.kind}
}

func badRequest(format string, args ...any) error {
	return &kindError{kind: ErrBadRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &kindError{kind: ErrNotFound, msg: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &kindError{kind: ErrConflict, msg: fmt.Sprintf(format, args...)}
}

// unavailable marks err (from Glance) as a backend failure.
func unavailable(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: ErrUnavailable, msg: fmt.Sprintf(format, args...), err: err}
}

// Error codes of the API, one per kind.
const (
	CodeNotFound    = "not_found"
	CodeConflict    = "conflict"
	CodeBadRequest  = "bad_request"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// classify maps an error to its HTTP status and API code. It is the one
// place where domain errors meet HTTP.
func classify(err error) (int, string) {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, transfer.ErrNoVolume):
		return 404, CodeNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, transfer.ErrExists):
		return 409, CodeConflict
	case errors.Is(err, ErrBadRequest), errors.Is(err, transfer.ErrInvalid):
		return 400, CodeBadRequest
	case errors.Is(err, ErrUnavailable):
		return 503, CodeUnavailable
	default:
		return 500, CodeInternal
	}
}

// APIError is an error answer of the daemon as seen by Client.
type APIError struct {
	Status  int    // HTTP status
	Code    string // one of the Code* constants
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Is lets callers test an APIError against the kinds, e.g.
// errors.Is(err, hostd.ErrNotFound).
func (e *APIError) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == ErrNotFound
	case CodeConflict:
		return target == ErrConflict
	case CodeBadRequest:
		return target == ErrBadRequest
	case CodeUnavailable:
		return target == ErrUnavailable
	}
	return false
}
