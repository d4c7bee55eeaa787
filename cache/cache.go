package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Config sizes the cache. Zero values take defaults in New.
type Config struct {
	MaxBytes        int64 // bytes of block data held (default 512 MiB; at least one block)
	BlockSize       int   // bytes per block (default 1 MiB)
	ReadAheadBlocks int   // blocks fetched ahead of a sequential reader (default 16; negative: none)

	// ReadAheadFetches bounds the read-ahead fetches in flight over the
	// whole cache (default 4). Read-ahead beyond it is dropped.
	ReadAheadFetches int
	// FetchTimeout bounds one source call (default 2 minutes).
	FetchTimeout time.Duration
	// Reserve maps and faults in the block memory in New, so a cold read
	// does not pay page faults (a daemon's choice; tests leave it off).
	Reserve bool
}

const (
	defaultMaxBytes         = 512 << 20
	defaultBlockSize        = 1 << 20
	defaultReadAheadBlocks  = 16
	defaultReadAheadFetches = 4
	defaultFetchTimeout     = 2 * time.Minute

	minRunBlocks = 16   // blocks one source call may fetch, at least
	maxRunBlocks = 64   // and at most
	zeroSetsKept = 4096 // identities whose known-zero sets are remembered
)

// Errors of the cached view.
var (
	ErrNegativeOffset = errors.New("cache: negative offset")
	ErrClosed         = errors.New("cache: closed")
)

// Stats are counters for status output and tests.
type Stats struct {
	Hits, Misses, Fetches, Evictions int64
	Bytes                            int64 // block data held now
}

// key names one block of one content.
type key struct {
	id string
	b  int64
}

// block is one cached block. refs counts its holders: the LRU while it is
// cached, the fetch that made it while that fetch has waiters, and each
// reader copying out of it. The last holder recycles buf, so a buffer is
// never reused under a reader.
type block struct {
	buf  []byte
	refs atomic.Int32
}

// Cache is the one shared block cache. It is safe for concurrent use.
type Cache struct {
	cfg      Config
	log      *slog.Logger
	ctx      context.Context // fetches run under it, never under a reader's
	cancel   context.CancelFunc
	run      int // blocks per source call at most
	raSem    chan struct{}
	bufs     *arena // block buffers, recycled
	fetchers sync.WaitGroup

	mu       sync.Mutex // guards everything below; never held across a source call
	lru      *simplelru.LRU[key, *block]
	inflight map[key]*fetch
	zeros    *simplelru.LRU[string, *zeroSet]
	closed   bool
	stats    Stats
}

// New makes a cache. ctx is the daemon's lifetime: fetches run under it, not
// under any one reader's context. Close releases the cache.
func New(ctx context.Context, cfg Config, log *slog.Logger) *Cache {
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = defaultBlockSize
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = defaultMaxBytes
	}
	cfg.MaxBytes = max(cfg.MaxBytes, int64(cfg.BlockSize))
	if cfg.ReadAheadBlocks == 0 {
		cfg.ReadAheadBlocks = defaultReadAheadBlocks
	}
	if cfg.ReadAheadFetches <= 0 {
		cfg.ReadAheadFetches = defaultReadAheadFetches
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = defaultFetchTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A run covers a read-ahead window, at least minRunBlocks for large
	// demand reads, and never more than half the cache.
	run := min(max(cfg.ReadAheadBlocks, minRunBlocks), maxRunBlocks)
	run = int(max(min(int64(run), cfg.MaxBytes/int64(cfg.BlockSize)/2), 1))

	c := &Cache{
		cfg:   cfg,
		log:   log,
		run:   run,
		raSem: make(chan struct{}, cfg.ReadAheadFetches),
		// Room for a full cache plus two runs in flight; more fetches in
		// flight make getBuf evict early rather than grow.
		bufs:     newArena(cfg.BlockSize, cfg.MaxBytes+int64(2*run*cfg.BlockSize)),
		inflight: map[key]*fetch{},
	}
	if cfg.Reserve {
		c.bufs.reserve()
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	// The byte bound is enforced in insert; the entry bound only caps
	// bookkeeping when many sources have short blocks.
	entries := int(min(cfg.MaxBytes/int64(cfg.BlockSize)*4+1024, 1<<30))
	c.lru, _ = simplelru.NewLRU(entries, c.evicted)
	c.zeros, _ = simplelru.NewLRU[string, *zeroSet](zeroSetsKept, nil)
	return c
}

// Open returns a cached view of src, itself a BlockSource and a Mapper.
// Views of sources with the same Identity share blocks.
func (c *Cache) Open(src BlockSource) BlockSource {
	id := src.Identity()
	size := src.Size()
	c.mu.Lock()
	z, ok := c.zeros.Get(id)
	if !ok {
		z = &zeroSet{}
		c.zeros.Add(id, z)
	}
	c.mu.Unlock()
	v := &view{
		c:       c,
		src:     src,
		id:      id,
		size:    size,
		nblocks: numBlocks(size, c.cfg.BlockSize),
		zeros:   z,
	}
	return v
}

// Stats returns current counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close cancels fetches in flight, waits for them and drops every block.
// Reads after Close fail with ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.fetchers.Wait()
	c.mu.Lock()
	c.lru.Purge()
	c.mu.Unlock()
	return nil
}

// insert adds a block and evicts the oldest until the bytes fit. c.mu held.
func (c *Cache) insert(k key, blk *block) {
	if c.lru.Contains(k) {
		return
	}
	blk.refs.Add(1)
	c.lru.Add(k, blk)
	c.stats.Bytes += int64(len(blk.buf))
	for c.stats.Bytes > c.cfg.MaxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// evicted is the LRU's callback for every removal. c.mu held.
func (c *Cache) evicted(_ key, blk *block) {
	c.stats.Bytes -= int64(len(blk.buf))
	c.stats.Evictions++
	c.unref(blk)
}

// unref drops one reference and recycles the buffer with the last.
func (c *Cache) unref(blk *block) {
	if blk.refs.Add(-1) == 0 {
		c.putBuf(blk.buf)
	}
}

// getBuf returns a block buffer of n bytes: recycled when n is a whole
// block, exact otherwise (short last blocks are rare).
func (c *Cache) getBuf(n int) []byte {
	if n != c.cfg.BlockSize {
		return make([]byte, n)
	}
	if b := c.bufs.get(); b != nil {
		return b
	}
	// The arena is spent (fetches in flight on top of a full cache): evict
	// least recently used blocks until one frees its buffer, so block memory
	// keeps its bound instead of spilling onto the heap.
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.lru.RemoveOldest()
		if b := c.bufs.get(); b != nil {
			return b
		}
	}
	return make([]byte, n)
}

func (c *Cache) putBuf(b []byte) { c.bufs.put(b) }
