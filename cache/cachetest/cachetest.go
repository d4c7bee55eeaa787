// Package cachetest checks any cache.BlockSource against its contract and
// offers MemSource, an in-memory source with injected faults, for tests
// across glancegw.
//
// Run is the one conformance suite: call it from a test of every source
// (the fake, the Glance source, the file source, the cached view):
//
//	func TestConformance(t *testing.T) {
//		cachetest.Run(t, func(t *testing.T, data []byte) cache.BlockSource {
//			return newMySource(t, data)
//		})
//	}
package cachetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// readTimeout bounds every call the suite makes, so a hung source fails
// the test instead of stalling it.
const readTimeout = 10 * time.Second

// Sizes are the source sizes Run checks: empty, one byte, not a multiple of
// 512, block multiples (4 KiB, 64 KiB, 1 MiB) and odd sizes spanning blocks.
func Sizes() []int {
	return []int{0, 1, 1000, 4096, 65536, 3*65536 + 4097, 1 << 20, 1<<20 + 1}
}

// Data returns size reproducible pseudo-random bytes with a zero run over
// the second quarter, so sources and caches see both data and zeros.
func Data(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(size)))
	p := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	for i := size - size%8; i < size; i++ {
		p[i] = byte(r.Uint32()) | 1
	}
	clear(p[size/4 : size/2])
	return p
}

// Run checks the BlockSource contract on sources made by newSource, which
// must serve exactly data. It calls newSource once per subtest.
func Run(t *testing.T, newSource func(t *testing.T, data []byte) cache.BlockSource) {
	t.Helper()
	for _, size := range Sizes() {
		data := Data(size, 1)
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			t.Run("SizeIdentity", func(t *testing.T) { testSizeIdentity(t, newSource(t, data), data) })
			t.Run("Whole", func(t *testing.T) { testWhole(t, newSource(t, data), data) })
			t.Run("Edges", func(t *testing.T) { testEdges(t, newSource(t, data), data) })
			t.Run("Random", func(t *testing.T) { testRandom(t, newSource(t, data), data) })
			t.Run("Sequential", func(t *testing.T) { testSequential(t, newSource(t, data), data) })
			t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newSource(t, data), data) })
			t.Run("Cancelled", func(t *testing.T) { testCancelled(t, newSource(t, data), data) })
		})
	}
}

// CheckRead reads n bytes at off from src and checks the result against
// data under the io.ReaderAt contract: the bytes that exist come back
// byte-identical, a read short of n ends with exactly io.EOF, and a full
// read returns nil (or io.EOF when it ends exactly at the end). It returns
// false after reporting a failure.
func CheckRead(t testing.TB, src cache.BlockSource, data []byte, off int64, n int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	p := make([]byte, n)
	if n > 0 { // 0xA5 everywhere, so an unwritten buffer cannot pass for zeros
		p[0] = 0xA5
		for i := 1; i < n; i *= 2 {
			copy(p[i:], p[:i])
		}
	}
	got, err := src.ReadAt(ctx, p, off)
	want := 0
	if off < int64(len(data)) {
		want = int(min(int64(n), int64(len(data))-off))
	}
	switch {
	case got != want:
		t.Errorf("ReadAt(len %d, off %d) of size %d: n = %d (err %v), want %d", n, off, len(data), got, err, want)
		return false
	case got < n && err != io.EOF:
		t.Errorf("ReadAt(len %d, off %d) of size %d: short read n = %d with err %v, want io.EOF", n, off, len(data), got, err)
		return false
	case got == n && err != nil && !(err == io.EOF && off+int64(n) >= int64(len(data))):
		t.Errorf("ReadAt(len %d, off %d) of size %d: full read with err %v", n, off, len(data), err)
		return false
	case got > 0 && !bytes.Equal(p[:got], data[off:off+int64(got)]):
		t.Errorf("ReadAt(len %d, off %d) of size %d: bytes differ from the data", n, off, len(data))
		return false
	}
	return true
}

// iterations scales a loop down in -short mode, for slow sources.
func iterations(n int) int {
	if testing.Short() {
		return max(n/5, 1)
	}
	return n
}

func testSizeIdentity(t *testing.T, src cache.BlockSource, data []byte) {
	if got := src.Size(); got != int64(len(data)) {
		t.Errorf("Size() = %d, want %d", got, len(data))
	}
	id := src.Identity()
	if id == "" {
		t.Fatal("Identity() is empty: cache keys would collide")
	}
	CheckRead(t, src, data, 0, min(len(data), 100))
	if again := src.Identity(); again != id {
		t.Errorf("Identity() changed from %q to %q", id, again)
	}
}

func testWhole(t *testing.T, src cache.BlockSource, data []byte) {
	CheckRead(t, src, data, 0, len(data))
	CheckRead(t, src, data, 0, len(data)+10) // crosses the end
}

func testEdges(t *testing.T, src cache.BlockSource, data []byte) {
	size := int64(len(data))
	CheckRead(t, src, data, size, 1)      // at the end
	CheckRead(t, src, data, size+1000, 7) // past the end
	CheckRead(t, src, data, 0, 0)         // zero length
	CheckRead(t, src, data, size/2, 0)
	CheckRead(t, src, data, size, 0)
	if size > 0 {
		CheckRead(t, src, data, size-1, 2) // last byte and beyond
		CheckRead(t, src, data, size-1, 1) // exactly the last byte
		CheckRead(t, src, data, size/3, int(size-size/3)+4096)
	}

	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	for _, off := range []int64{-1, -4096, -1 << 62} {
		n, err := src.ReadAt(ctx, make([]byte, 10), off)
		if err == nil || n != 0 {
			t.Errorf("ReadAt(off %d) = %d, %v; want 0 and an error", off, n, err)
		}
	}
}

func testRandom(t *testing.T, src cache.BlockSource, data []byte) {
	r := rand.New(rand.NewPCG(2, uint64(len(data))))
	size := len(data)
	for range iterations(150) {
		off := r.Int64N(int64(size + size/8 + 2))
		n := r.IntN(min(size, 200_000) + 16)
		if !CheckRead(t, src, data, off, n) {
			return
		}
	}
}

func testSequential(t *testing.T, src cache.BlockSource, data []byte) {
	for _, chunk := range []int{3001, 65536} {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		var got []byte
		p := make([]byte, chunk)
		var off int64
		for {
			n, err := src.ReadAt(ctx, p, off)
			got = append(got, p[:n]...)
			off += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("sequential read of %d at %d: %v", chunk, off, err)
			}
			if n != chunk {
				t.Fatalf("sequential read of %d at %d: n = %d without error", chunk, off, n)
			}
			if off > int64(len(data)) {
				t.Fatalf("sequential read went past the end (%d > %d) without io.EOF", off, len(data))
			}
		}
		cancel()
		if !bytes.Equal(got, data) {
			t.Errorf("sequential read in chunks of %d: %d bytes read, differ from the %d of data", chunk, len(got), len(data))
		}
	}
}

func testConcurrent(t *testing.T, src cache.BlockSource, data []byte) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 3))
			size := len(data)
			for range iterations(30) {
				off := r.Int64N(int64(size + 2))
				if !CheckRead(t, src, data, off, r.IntN(min(size, 100_000)+2)) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

func testCancelled(t *testing.T, src cache.BlockSource, data []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := max(min(len(data), 4096), 1)
	check := func(what string) {
		t.Helper()
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			got, err := src.ReadAt(ctx, make([]byte, n), 0)
			done <- result{got, err}
		}()
		select {
		case r := <-done:
			if r.err == nil {
				t.Errorf("%s: ReadAt with a cancelled ctx = %d, nil; want an error", what, r.n)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("%s: ReadAt with a cancelled ctx did not return within 2s", what)
		}
	}
	check("cold")
	CheckRead(t, src, data, 0, n) // now possibly cached
	check("warm")
}
