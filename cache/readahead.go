package cache

// Read-ahead. A view tells sequential readers apart by where their reads
// end, like the kernel's per-file read-ahead but without file handles:
// several readers of one view (two FUSE handles, NBD connections) each
// keep their own stream and window.

const streamsPerView = 4

// stream is one sequential reader of a view, as far as its reads show.
type stream struct {
	end    int64  // end of its furthest read
	raNext int64  // first block not yet read ahead
	ra     *fetch // last fetch of its read-ahead in flight, if any
	gen    uint64 // tick when the stream began; 0: slot unused
	used   uint64 // tick of the last read, for replacement
}

// sequential records a read of n bytes at off and returns its stream and
// whether the read continues it. A block of slack either way tolerates the
// reordering of clients with several requests in flight. A read that
// continues no stream starts one (replacing the least recently used) and is
// not sequential: a lone header read should not pull in a window.
func (v *view) sequential(off int64, n int) (int, bool) {
	slack := int64(v.c.cfg.BlockSize)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.tick++
	victim := 0
	for i := range v.streams {
		s := &v.streams[i]
		if s.gen != 0 && off >= s.end-slack && off <= s.end+slack {
			s.end = max(s.end, off+int64(n))
			s.used = v.tick
			return i, true
		}
		if s.used < v.streams[victim].used {
			victim = i
		}
	}
	v.streams[victim] = stream{end: off + int64(n), gen: v.tick, used: v.tick}
	return victim, false
}

// readAhead fetches the blocks after last for stream st in the background.
// It registers the fetches at once, so the next reads wait on them rather
// than fetch the same blocks, and issues them in order after any fetch
// still running for the block before, so a streaming source sees
// increasing offsets. It refills the window when half of it is used, so
// each source call covers several blocks. It never blocks: while a
// read-ahead of this stream runs or the cache-wide limit is reached, the
// work is dropped.
func (v *view) readAhead(st int, last int64) {
	c := v.c
	ra := int64(c.cfg.ReadAheadBlocks)
	if ra <= 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	s := &v.streams[st]
	if s.ra != nil {
		select {
		case <-s.ra.done:
			s.ra = nil
		default:
			return // one read-ahead per stream keeps its source calls in order
		}
	}
	from := max(s.raNext, last+1)
	to := min(last+ra, v.nblocks-1)
	if from > to || from-(last+1) >= max(ra/2, 1) {
		return // nothing left, or enough already queued ahead
	}
	select {
	case c.raSem <- struct{}{}:
	default:
		return
	}
	fs := c.planAhead(v, from, to)
	s.raNext = to + 1
	if len(fs) == 0 {
		<-c.raSem
		return
	}
	// The slot is freed as the last fetch completes, before its waiters
	// run, so busy readers cannot starve the release.
	s.ra = fs[len(fs)-1]
	s.ra.onDone = func() { <-c.raSem }
	go c.runFetches(v, fs)
}
