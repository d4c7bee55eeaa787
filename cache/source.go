// Package cache holds the byte-source seam of glancegw (BlockSource) and the
// one shared, byte-bounded block cache that every front-end reads through.
//
// A cached view of a source is itself a BlockSource, so the FUSE tree, the NBD
// server and the transfer engine never know whether bytes came from memory or
// from the network.
package cache

import "context"

// BlockSource is a random-access, read-only byte source of a known size.
//
// ReadAt follows the io.ReaderAt contract: it is safe for concurrent use, it
// returns n < len(p) only together with a non-nil error (io.EOF at the end of
// the source), and it does not keep p after returning. ctx bounds the wait of
// this one call.
type BlockSource interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
	// Identity names the content: two sources with the same identity hold the
	// same bytes. It changes whenever the bytes may change (for a Glance
	// image: domain, image id and checksum), so cache keys built on it never
	// serve stale blocks.
	Identity() string
}

// Extent is a run of bytes of a source. Zero is true only when the run is
// known to read as zeros; false means data or unknown.
type Extent struct {
	Off, Len int64
	Zero     bool
}

// Mapper is implemented by sources that know which parts read as zeros. Map
// covers [off, off+length) with contiguous extents, clipped at Size.
type Mapper interface {
	Map(ctx context.Context, off, length int64) ([]Extent, error)
}
