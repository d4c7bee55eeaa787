// Package nbd is a read-only NBD server (fixed newstyle handshake, concurrent
// transmission, structured replies, base:allocation block status) over any
// cache.BlockSource.
package nbd

import "github.com/glancegw/glancegw/cache"

// Export is one named export.
type Export struct {
	Name        string
	Description string
	Source      cache.BlockSource
}

// Exports is the live set of exports; it changes with the catalog.
type Exports interface {
	Lookup(name string) (Export, bool)
	List() []Export
}
