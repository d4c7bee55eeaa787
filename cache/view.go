package cache

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// view is the cached face of one source.
type view struct {
	c       *Cache
	src     BlockSource
	id      string
	size    int64
	nblocks int64
	zeros   *zeroSet // shared by views of one identity; guarded by c.mu

	mu      sync.Mutex // guards the read-ahead state; may be held while taking c.mu
	streams [streamsPerView]stream
	tick    uint64
}

var (
	_ BlockSource = (*view)(nil)
	_ Mapper      = (*view)(nil)
)

func (v *view) Size() int64      { return v.size }
func (v *view) Identity() string { return v.id }

// ReadAt reads through the cache. Missing blocks are fetched under the
// cache's context; ctx only bounds this caller's wait.
func (v *view) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("cache: read at %d: %w", off, ErrNegativeOffset)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("cache: read at %d: %w", off, err)
	}
	bs := v.c.cfg.BlockSize
	s := spanOf(off, len(p), v.size, bs)
	if s.n == 0 {
		if s.eof {
			return 0, io.EOF
		}
		return 0, nil
	}
	st, seq := v.sequential(off, s.n)

	var local [4]slot
	slots, err := v.c.acquire(v, s.first, s.last, local[:0])
	if err != nil {
		v.drop(slots)
		return 0, fmt.Errorf("cache: read at %d: %w", off, err)
	}
	if seq {
		v.readAhead(st, s.last)
	}

	n := 0
	for i := range slots {
		sl := &slots[i]
		b := s.first + int64(i)
		if sl.f != nil {
			f := sl.f
			sl.f = nil
			sl.blk, sl.zero, err = v.c.wait(ctx, f, b)
			if err != nil {
				v.drop(slots[i+1:])
				return n, fmt.Errorf("cache: read at %d: %w", off, err)
			}
		}
		bo, do, cnt := piece(b, off, s.n, bs)
		dst := p[do : do+cnt]
		if sl.zero {
			clear(dst)
		} else {
			copy(dst, sl.blk.buf[bo:bo+cnt])
			v.c.unref(sl.blk)
			sl.blk = nil
		}
		n += cnt
	}
	if s.eof {
		return n, io.EOF
	}
	return n, nil
}

// drop gives up slots not copied from.
func (v *view) drop(slots []slot) {
	for _, sl := range slots {
		switch {
		case sl.blk != nil:
			v.c.unref(sl.blk)
		case sl.f != nil:
			v.c.leave(sl.f)
		}
	}
}

// Map reports which parts of [off, off+length) are known to read as zeros.
// Blocks not yet fetched, or holding data, are reported as data.
func (v *view) Map(ctx context.Context, off, length int64) ([]Extent, error) {
	if off < 0 || length < 0 {
		return nil, fmt.Errorf("cache: map %d+%d: %w", off, length, ErrNegativeOffset)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cache: map %d+%d: %w", off, length, err)
	}
	end := v.size
	if length < v.size-off {
		end = off + length
	}
	if off >= end {
		return nil, nil
	}
	bs := int64(v.c.cfg.BlockSize)
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	if v.zeros.count == 0 {
		return []Extent{{Off: off, Len: end - off}}, nil
	}
	var out []Extent
	for b := off / bs; b*bs < end; b++ {
		lo, hi := max(b*bs, off), min((b+1)*bs, end)
		z := v.zeros.has(b)
		if k := len(out) - 1; k >= 0 && out[k].Zero == z {
			out[k].Len += hi - lo
			continue
		}
		out = append(out, Extent{Off: lo, Len: hi - lo, Zero: z})
	}
	return out, nil
}
