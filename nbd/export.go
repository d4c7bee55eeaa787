// Package nbd is a read-only NBD server (fixed newstyle handshake, concurrent
// transmission, structured replies, base:allocation block status) over any
// cache.BlockSource.
package nbd

import (
	"errors"

	"github.com/glancegw/glancegw/cache"
)

// Export is one named export.
type Export struct {
	Name        string
	Description string
	Source      cache.BlockSource
}

// ErrUnknownExport is what Exports.Lookup returns for a name that is known
// not to be exported.
var ErrUnknownExport = errors.New("unknown export")

// Exports is the live set of exports; it changes with the catalog.
type Exports interface {
	// Lookup returns the export called name. When there is none it returns
	// ErrUnknownExport, or an error that says why the name could not be
	// resolved (e.g. the backend that would hold it could not be asked):
	// its text goes to the client with the NBD_REP_ERR_UNKNOWN reply.
	Lookup(name string) (Export, error)
	List() []Export
}
