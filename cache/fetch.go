package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// fetch is one source call for a run of consecutive missing blocks. Every
// block of the run maps to it in Cache.inflight until it is done, so readers
// of those blocks wait on it instead of calling the source again.
type fetch struct {
	first int64 // first block
	count int   // blocks in the run
	done  chan struct{}
	after *fetch // in flight for block first-1 when planned: call the source after it
	// onDone, if set, runs before waiters wake: work done there cannot be
	// starved by them.
	onDone func()

	// Guarded by Cache.mu. hold counts the fetch's own goroutine plus one
	// per waiting reader's slot; at zero the fetch drops its block refs.
	hold int

	// Written before done is closed, read after.
	good   int      // leading blocks fetched; the rest failed with err
	blocks []*block // nil for a zero block; each holds a ref until hold == 0
	err    error
}

// slot is one block of a read: a referenced block, a known-zero block, or
// a fetch to wait for (with a hold on it).
type slot struct {
	blk  *block
	f    *fetch
	zero bool
}

// acquire looks up blocks first..last of v for a demand read and starts one
// goroutine fetching the missing runs in increasing order. It returns a
// slot per block.
func (c *Cache) acquire(v *view, first, last int64, slots []slot) ([]slot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return slots, ErrClosed
	}
	var started []*fetch
	var run *fetch
	for b := first; b <= last; b++ {
		if v.zeros.has(b) {
			c.stats.Hits++
			slots = append(slots, slot{zero: true})
			run = nil
			continue
		}
		k := key{v.id, b}
		if blk, ok := c.lru.Get(k); ok {
			c.stats.Hits++
			blk.refs.Add(1)
			slots = append(slots, slot{blk: blk})
			run = nil
			continue
		}
		c.stats.Misses++
		f, ok := c.inflight[k]
		if !ok {
			if run == nil || run.count == c.run {
				run = &fetch{first: b, done: make(chan struct{}), hold: 1}
				if b > first { // this reader needs block b-1 anyway: keep the order
					run.after = c.inflight[key{v.id, b - 1}]
				}
				started = append(started, run)
			}
			run.count++
			c.inflight[k] = run
			f = run
		} else {
			run = nil
		}
		f.hold++
		slots = append(slots, slot{f: f})
	}
	if len(started) > 0 {
		c.fetchers.Add(1)
		go c.runFetches(v, started)
	}
	return slots, nil
}

// planAhead registers fetches for the missing blocks of first..last of v
// (no reader waits on them yet) and takes one c.fetchers count for them if
// there are any. Each waits for a fetch in flight for the block before it,
// so the source sees increasing offsets.
func (c *Cache) planAhead(v *view, first, last int64) []*fetch {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	var fs []*fetch
	var run *fetch
	for b := first; b <= last; b++ {
		k := key{v.id, b}
		if v.zeros.has(b) || c.lru.Contains(k) || c.inflight[k] != nil {
			run = nil
			continue
		}
		if run == nil || run.count == c.run {
			run = &fetch{first: b, done: make(chan struct{}), hold: 1, after: c.inflight[key{v.id, b - 1}]}
			fs = append(fs, run)
		}
		run.count++
		c.inflight[k] = run
	}
	if len(fs) > 0 {
		c.fetchers.Add(1)
	}
	return fs
}

// runFetches performs fetches one after another, so the source sees
// increasing offsets. It owns one c.fetchers count.
func (c *Cache) runFetches(v *view, fs []*fetch) {
	defer c.fetchers.Done()
	for _, f := range fs {
		if f.after != nil {
			select {
			case <-f.after.done:
			case <-c.ctx.Done(): // fill fails fast and wakes the waiters
			}
			f.after = nil
		}
		c.fill(v, f)
	}
}

// fill reads f's run from the source with one call, splits it into blocks,
// caches them and wakes the waiters. A failed part is not cached.
func (c *Cache) fill(v *view, f *fetch) {
	bs := c.cfg.BlockSize
	off := f.first * int64(bs)
	length := int(min(int64(f.count)*int64(bs), v.size-off))

	// Each block is read straight into its own buffer, in order: a streaming
	// source serves consecutive calls from one open response, so a run costs
	// one request and no extra copy (a scratch buffer cost a memmove of every
	// byte, the largest CPU item of a cold sequential read).
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.FetchTimeout)
	blocks := make([]*block, f.count)
	zero := make([]bool, f.count)
	good := 0
	var err error
	for i := range f.count {
		boff := off + int64(i*bs)
		blen := int(min(int64(bs), v.size-boff))
		buf := c.getBuf(blen)
		var n int
		n, err = v.src.ReadAt(ctx, buf, boff)
		// A short read ends the data only with io.EOF itself (io.ReaderAt):
		// a wrapped one is a failure whose message says where it came
		// from (a closed connection is "…: EOF").
		switch {
		case n == blen && (err == nil || errors.Is(err, io.EOF)):
			err = nil
		case err == nil || err == io.EOF:
			err = fmt.Errorf("short read of %d bytes: %w", n, io.ErrUnexpectedEOF)
		}
		if err != nil {
			c.putBuf(buf)
			break
		}
		if isZero(buf) {
			zero[i] = true
			c.putBuf(buf)
		} else {
			blocks[i] = &block{buf: buf}
		}
		good++
	}
	cancel()
	if err != nil {
		err = fmt.Errorf("cache: fetch %d+%d: %w", off, length, err)
		c.log.Warn("block fetch failed", "identity", v.id, "off", off, "len", length, "err", err)
	}

	c.mu.Lock()
	c.stats.Fetches++
	for i := range f.count {
		b := f.first + int64(i)
		delete(c.inflight, key{v.id, b})
		switch {
		case i >= good:
		case zero[i]:
			v.zeros.set(b, v.nblocks)
		default:
			blocks[i].refs.Store(1) // the fetch's own reference
			c.insert(key{v.id, b}, blocks[i])
		}
	}
	f.good, f.blocks, f.err = good, blocks, err
	c.releaseLocked(f)
	c.mu.Unlock()
	if f.onDone != nil {
		f.onDone()
	}
	close(f.done)
}

// wait waits for f to fetch block b, or for ctx. On success it returns the
// block with a reference taken, or zero == true. It drops the slot's hold.
func (c *Cache) wait(ctx context.Context, f *fetch, b int64) (blk *block, zero bool, err error) {
	select {
	case <-f.done:
	case <-ctx.Done():
		c.leave(f)
		return nil, false, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := int(b - f.first)
	switch {
	case i >= f.good:
		err = f.err
	case f.blocks[i] == nil:
		zero = true
	default:
		blk = f.blocks[i]
		blk.refs.Add(1)
	}
	c.releaseLocked(f)
	return blk, zero, err
}

// leave drops a slot's hold on f without using it.
func (c *Cache) leave(f *fetch) {
	c.mu.Lock()
	c.releaseLocked(f)
	c.mu.Unlock()
}

// releaseLocked drops one hold on f; the last drops f's block refs.
// c.mu held.
func (c *Cache) releaseLocked(f *fetch) {
	f.hold--
	if f.hold > 0 {
		return
	}
	for _, blk := range f.blocks {
		if blk != nil {
			c.unref(blk)
		}
	}
	f.blocks = nil
}
