package main

import (
	"errors"

	"github.com/glancegw/glancegw/hostd"
	"github.com/urfave/cli/v2"
)

// Exit codes. They are stable: scripts depend on them. Keep exitCodesHelp
// in step.
const (
	exitOK          = 0   // success
	exitError       = 1   // any other error
	exitUsage       = 2   // usage error or bad input
	exitUnreachable = 3   // the daemon is not reachable
	exitNotFound    = 4   // not found (domain, image)
	exitConflict    = 5   // conflict (already exists, already mounted)
	exitBackend     = 6   // backend (Glance) unavailable
	exitAuth        = 7   // Glance or Keystone rejected the credentials
	exitCancelled   = 130 // a waited-for job was cancelled, or the wait was interrupted (SIGINT)
)

const exitCodesHelp = `Exit codes:
     0  success
     1  any other error
     2  usage error or bad input
     3  the daemon is not reachable
     4  not found (domain, image)
     5  conflict (already exists, already mounted)
     6  backend (Glance) unavailable
     7  Glance or Keystone rejected the credentials (glancegw domain edit
        D --password-file FILE or --token-file FILE sets new ones)
   130  a job waited for (--wait, job wait) was cancelled, or the wait was
        interrupted (Ctrl-C, SIGTERM: the job goes on); a failed or
        interrupted job gives 1`

// usageError is a command line the CLI cannot run: unknown flag, missing
// argument, bad value.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode maps an error to the exit code, in one place.
func exitCode(err error) int {
	var ue usageError
	var ec cli.ExitCoder
	var je jobError
	var se stoppedWaiting
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &je):
		return je.exitCode()
	case errors.As(err, &se):
		return exitCancelled
	case errors.As(err, &ue), errors.Is(err, hostd.ErrBadRequest):
		return exitUsage
	case errors.Is(err, hostd.ErrDaemonUnreachable):
		return exitUnreachable
	case errors.Is(err, hostd.ErrNotFound):
		return exitNotFound
	case errors.Is(err, hostd.ErrConflict), errors.Is(err, hostd.ErrAlreadyRunning):
		return exitConflict
	case errors.Is(err, hostd.ErrAuthFailed):
		return exitAuth
	case errors.Is(err, hostd.ErrUnavailable):
		return exitBackend
	case errors.As(err, &ec):
		// Only urfave/cli's own help errors ("No help topic") get here.
		return exitUsage
	default:
		return exitError
	}
}
