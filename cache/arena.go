package cache

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// arena hands out block buffers carved from anonymous mappings that are
// faulted in whole. A cold sequential read fills fresh memory at network
// speed; page by page, the faults cost more CPU than the copy (measured:
// 1.1 s of a 2.8 s read of 1 GiB through the mount). Buffers are never returned to the
// kernel: the cache is bounded, so the arena is too (limit), and once the
// cache is full evicted buffers are reused. When the arena is spent the
// cache evicts to free a buffer (see Cache.getBuf).
type arena struct {
	size  int   // bytes per buffer
	chunk int   // bytes per mapping: a multiple of size
	limit int64 // bytes mapped at most

	mu     sync.Mutex
	free   [][]byte
	mapped int64
	maps   *mappings
}

// mappings are unmapped when their arena is garbage: a block is reachable
// only through its cache (whose arena this is), so by then no buffer is.
type mappings struct{ m [][]byte }

// arenaChunk is the largest mapping.
const arenaChunk = 64 << 20

// reserve maps the whole arena now, so that no read pays for it later.
func (a *arena) reserve() {
	var bufs [][]byte
	for b := a.get(); b != nil; b = a.get() {
		bufs = append(bufs, b)
	}
	for _, b := range bufs {
		a.put(b)
	}
}

func newArena(size int, limit int64) *arena {
	chunk := max(size, int(min(arenaChunk, limit))/size*size)
	a := &arena{size: size, chunk: chunk, limit: limit, maps: &mappings{}}
	runtime.AddCleanup(a, func(ms *mappings) {
		for _, m := range ms.m {
			_ = unix.Munmap(m)
		}
	}, a.maps)
	return a
}

// get returns a buffer of a.size bytes (contents undefined), or nil when
// none is free and the arena may map no more.
func (a *arena) get() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.free); n > 0 {
		b := a.free[n-1]
		a.free = a.free[:n-1]
		return b
	}
	if a.mapped+int64(a.chunk) <= a.limit {
		// MAP_POPULATE faults the chunk in with one call: page by page, the
		// faults cost more CPU than the copy itself (a cold 1 GiB read through
		// the mount went from 390 to 600 MB/s). Huge pages were slower still
		// (synchronous compaction).
		if m, err := unix.Mmap(-1, 0, a.chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_POPULATE); err == nil {
			a.mapped += int64(a.chunk)
			a.maps.m = append(a.maps.m, m)
			for off := 0; off+a.size <= len(m); off += a.size {
				a.free = append(a.free, m[off:off+a.size:off+a.size])
			}
			b := a.free[len(a.free)-1]
			a.free = a.free[:len(a.free)-1]
			return b
		}
		a.limit = a.mapped // mmap failed: do not try again
	}
	return nil
}

// put takes back a buffer. Heap buffers are kept too: the number of
// buffers alive is bounded by the cache, not by the list.
func (a *arena) put(b []byte) {
	if cap(b) != a.size {
		return
	}
	a.mu.Lock()
	a.free = append(a.free, b[:a.size])
	a.mu.Unlock()
}
