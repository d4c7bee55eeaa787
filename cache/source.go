// Package cache holds the byte-source seam of glancegw (BlockSource) and the
// one shared, byte-bounded block cache that every front-end reads through.
//
// A cached view of a source is itself a BlockSource, so the FUSE tree, the NBD
// server and the transfer engine never know whether bytes came from memory or
// from the network.
//
// # Blocks
//
// Sources are cut into blocks of Config.BlockSize bytes (the last one may be
// short), kept in one LRU keyed by (Identity, block index) and bounded in
// bytes of block data. A replaced image has a new Identity, so it never
// meets the old one's blocks.
//
// # Fetches
//
// A missing block is fetched once however many readers want it: later
// readers wait on the fetch in flight. Consecutive missing blocks are
// fetched with one source call. A fetch runs under the context given to New
// (the daemon's lifetime) bounded by Config.FetchTimeout, never under a
// reader's: a reader whose context ends stops waiting, the fetch goes on
// and fills the cache for the others. A failed fetch is not cached; its
// waiters get the error and the next read tries again. Whole blocks read
// before a failure are kept.
//
// # Read-ahead
//
// A view notices sequential readers (up to four at once) and fetches the
// next Config.ReadAheadBlocks blocks in the background, in increasing
// offset order and in multi-block calls, because the Glance source streams
// in-order reads and pays ~10 ms for every new request. Read-ahead is
// best-effort: at most Config.ReadAheadFetches run at once and more are
// dropped, and a demand read never waits behind one it does not need.
//
// # Known zeros
//
// A fetched block that is all zeros is not stored; a bit per block (kept
// per Identity, even after eviction) remembers it, reads of it are served
// by clearing, and the view's Map (it is a Mapper) reports it as Zero.
//
// # Memory
//
// The cache holds at most MaxBytes of block data. On top of that, at peak:
// up to the fetch run length (max(ReadAheadBlocks, 16), at most 64 blocks)
// of recycled block buffers; per fetch in flight, its new blocks (each read
// straight into its own buffer); and
// blocks evicted while a reader still copies out of them (a reference count
// keeps a buffer from being reused under a reader). With the defaults one
// sequential reader adds under 70 MiB; each further read-ahead fetch in
// flight adds up to twice its run while it runs. Measured: a 4 GiB image
// read in 128 KiB reads through a 256 MiB cache peaks at about 295 MiB RSS
// for the whole process, and allocates next to nothing once the cache is
// full, since evicted buffers are recycled.
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
