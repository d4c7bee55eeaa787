package hostd

import (
	"errors"
	"fmt"

	"github.com/glancegw/glancegw/glance"
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
	// ErrAuthFailed means Glance or Keystone refused a domain's
	// credentials: new ones are needed, waiting does not help.
	ErrAuthFailed = errors.New("Glance or Keystone rejected the credentials")

	// ErrDaemonUnreachable is returned by Client when nothing answers on the
	// socket.
	ErrDaemonUnreachable = errors.New("daemon unreachable")
	// ErrAlreadyRunning is returned by Run when another daemon answers on
	// one of its sockets or holds its state directory or repository.
	ErrAlreadyRunning = errors.New("another daemon is running")
)

// kindError carries a user-facing message and one of the kinds above, so the
// message is not prefixed with the kind's own text.
type kindError struct {
	kind error
	msg  string
	err  error  // cause, may be nil
	hint string // what the user can do, after the cause; may be empty
}

func (e *kindError) Error() string {
	s := e.msg
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	if e.hint != "" {
		s += "; " + e.hint
	}
	return s
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

// unavailable marks err (from Glance or Keystone) as a backend failure, or
// as ErrAuthFailed when they refused the credentials. Callers that know
// the domain use backendError, whose hint names it.
func unavailable(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if glance.AuthFailed(err) {
		return &kindError{kind: ErrAuthFailed, msg: fmt.Sprintf(format, args...), err: err,
			hint: "set new credentials with: glancegw domain edit D --password-file FILE (or --token-file FILE)"}
	}
	return &kindError{kind: ErrUnavailable, msg: fmt.Sprintf(format, args...), err: err}
}

// backendError is unavailable for an error of domain rec's Glance, with a
// hint that names the domain and the flag its kind of auth needs.
func backendError(rec DomainRecord, err error, format string, args ...any) error {
	err = unavailable(err, format, args...)
	if ke, ok := err.(*kindError); ok && ke.kind == ErrAuthFailed {
		ke.hint = credentialsHint(rec)
	}
	return err
}

func credentialsHint(rec DomainRecord) string {
	switch rec.Auth {
	case glance.AuthKeystone:
		return fmt.Sprintf("Keystone or Glance rejected the credentials of domain %s: check its user, project and "+
			"password, and set a new password with: glancegw domain edit %s --password-file FILE", rec.Name, rec.Name)
	case glance.AuthToken:
		return fmt.Sprintf("Glance rejected the token of domain %s (it may have expired): "+
			"set a new one with: glancegw domain edit %s --token-file FILE", rec.Name, rec.Name)
	default:
		return fmt.Sprintf("Glance wants credentials that domain %s has none of: give them with: glancegw domain edit %s "+
			"--auth-url URL --username U --project P --password-file FILE (or --token-file FILE)", rec.Name, rec.Name)
	}
}

// Error codes of the API, one per kind.
const (
	CodeNotFound    = "not_found"
	CodeConflict    = "conflict"
	CodeBadRequest  = "bad_request"
	CodeUnavailable = "unavailable"
	CodeAuthFailed  = "auth_failed"
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
	case errors.Is(err, ErrAuthFailed):
		// Before unavailable: a refusal is not an outage. 502: the
		// daemon works, its upstream said no.
		return 502, CodeAuthFailed
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
	case CodeAuthFailed:
		return target == ErrAuthFailed
	}
	return false
}
