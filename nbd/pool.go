package nbd

import (
	"math/bits"
	"sync"
)

// bufPool recycles read buffers in power-of-two size classes from 4 KiB up
// to maxBlockSize, so a busy connection does not allocate per request.
type bufPool struct {
	classes [poolClasses]sync.Pool
}

const (
	poolMinShift = 12                    // 4 KiB
	poolClasses  = 25 - poolMinShift + 1 // 4 KiB .. 32 MiB (= maxBlockSize)
)

// poolClass returns the size class index for n bytes (n ≤ maxBlockSize).
func poolClass(n int) int {
	if n <= 1<<poolMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - poolMinShift
}

// get returns a buffer of length n. Its bytes are garbage.
func (p *bufPool) get(n int) *[]byte {
	c := poolClass(n)
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(c+poolMinShift))
	return &b
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *[]byte) {
	c := poolClass(cap(*b))
	if c >= 0 && c < poolClasses && cap(*b) == 1<<(c+poolMinShift) {
		p.classes[c].Put(b)
	}
}
