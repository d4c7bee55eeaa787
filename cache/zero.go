package cache

import "bytes"

// zeroSet remembers which blocks of one identity read as zeros. It outlives
// the blocks' bytes (a zero block is never stored), costs one bit per block
// and is guarded by the cache lock.
type zeroSet struct {
	bits  []uint64 // allocated on the first set
	count int64    // bits set
}

func (z *zeroSet) has(b int64) bool {
	w := b / 64
	return b >= 0 && w < int64(len(z.bits)) && z.bits[w]&(1<<(uint64(b)%64)) != 0
}

// set marks block b of a source of nblocks blocks as zero.
func (z *zeroSet) set(b, nblocks int64) {
	if b < 0 || b >= nblocks {
		return
	}
	if z.bits == nil {
		z.bits = make([]uint64, (nblocks+63)/64)
	}
	w, m := b/64, uint64(1)<<(uint64(b)%64)
	if w >= int64(len(z.bits)) || z.bits[w]&m != 0 {
		return
	}
	z.bits[w] |= m
	z.count++
}

// isZero reports whether p holds only zero bytes.
func isZero(p []byte) bool {
	var zeros [4096]byte
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
