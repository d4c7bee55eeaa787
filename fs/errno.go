package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"log/slog"
	"syscall"
)

// Sentinel errors of the tree.
var (
	// ErrNotFound: no such name in the tree (or the image left the listing).
	ErrNotFound = errors.New("not found")
	// ErrReadOnly: the tree is read-only.
	ErrReadOnly = errors.New("read-only file system")
	// ErrNotListed: the domain has not been listed successfully yet and the
	// last try failed recently.
	ErrNotListed = errors.New("domain not listed yet")
	// ErrShortSource: the byte source ended before the image's size.
	ErrShortSource = errors.New("source shorter than image size")
)

// notFounder is how lower layers (glance, cache) say "gone" without this
// package importing them.
type notFounder interface{ NotFound() bool }

// translateError is the one place where errors become errnos. Anything not
// known to be harmless becomes EIO and is logged once, here.
func translateError(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var nf notFounder
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, iofs.ErrNotExist),
		errors.As(err, &nf) && nf.NotFound():
		return syscall.ENOENT
	case errors.Is(err, ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, context.Canceled):
		// The reader was interrupted (the kernel cancels the request).
		return syscall.EINTR
	}
	log.Warn("fs: request failed", "op", op, "err", err)
	return syscall.EIO
}
