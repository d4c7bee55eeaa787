package cache

// Block arithmetic. Everything here is pure so it can be table-tested: a read
// of len(p) bytes at off splits into a head (the tail end of one block), an
// aligned body of whole blocks and a tail (the start of one block).

// span is the part of a source that one ReadAt touches.
type span struct {
	n           int   // bytes that exist in [off, off+len(p)); ≤ len(p)
	first, last int64 // blocks touched; last < first when n == 0
	eof         bool  // the request runs past the end of the source
}

// spanOf clips a read of plen bytes at off (off ≥ 0) to a source of size
// bytes split into blocks of bs bytes.
func spanOf(off int64, plen int, size int64, bs int) span {
	if off >= size {
		return span{first: 0, last: -1, eof: plen > 0}
	}
	n := int64(plen)
	eof := false
	if rest := size - off; n > rest {
		n, eof = rest, true
	}
	if n == 0 {
		return span{first: 0, last: -1}
	}
	return span{
		n:     int(n),
		first: off / int64(bs),
		last:  (off + n - 1) / int64(bs),
		eof:   eof,
	}
}

// piece says which bytes of block b a read of n bytes at off copies: cnt
// bytes from blkOff within the block to dstOff within p. b must lie in the
// span of the read.
func piece(b, off int64, n, bs int) (blkOff, dstOff, cnt int) {
	start := b * int64(bs)
	end := start + int64(bs)
	lo := max(start, off)
	hi := min(end, off+int64(n))
	return int(lo - start), int(lo - off), int(hi - lo)
}

// numBlocks is the number of blocks of a source of size bytes.
func numBlocks(size int64, bs int) int64 {
	return (size + int64(bs) - 1) / int64(bs)
}

// blockLen is the length of block b of a source of size bytes: bs except
// for a short last block.
func blockLen(b, size int64, bs int) int {
	start := b * int64(bs)
	if start >= size {
		return 0
	}
	return int(min(int64(bs), size-start))
}
