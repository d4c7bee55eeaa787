package cache_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// patternSource serves size bytes where each 8-byte word holds its own
// offset (plus one, so no block is all zeros), without holding them.
type patternSource struct{ size int64 }

func (s patternSource) Size() int64      { return s.size }
func (s patternSource) Identity() string { return fmt.Sprintf("pattern:%d", s.size) }

func (s patternSource) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	if off%8 != 0 || len(p)%8 != 0 {
		return 0, fmt.Errorf("patternSource: unaligned read %d@%d", len(p), off)
	}
	n := int(min(int64(len(p)), s.size-off))
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], uint64(off+int64(i))+1)
	}
	return n, nil
}

// procStatusKiB reads a field of /proc/self/status in KiB.
func procStatusKiB(t *testing.T, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %s: %v", field, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// TestMemory reads a 4 GiB source through a 256 MiB cache in 128 KiB reads
// (a FUSE reader) and checks that the peak RSS of the whole test process
// stays under cache + 100 MiB, without a memory limit set.
func TestMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("reads 4 GiB; skipped in -short and under -race (shadow memory)")
	}
	const (
		size     = 4 << 30
		maxBytes = 256 << 20
		budget   = maxBytes + 100<<20
	)
	// Earlier tests' caches unmap their block memory once collected (a
	// cleanup after GC): let that happen before the peak is reset.
	// Heap that earlier tests left goes back to the OS too: block memory
	// is not heap, so it would not be reused.
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	debug.FreeOSMemory()
	// Reset the peak RSS (VmHWM) so earlier tests do not count.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)

	c := newCache(t, cache.Config{MaxBytes: maxBytes})
	v := c.Open(patternSource{size})
	p := make([]byte, 128<<10)
	ctx := context.Background()
	start := time.Now()
	for off := int64(0); off < size; off += int64(len(p)) {
		n, err := v.ReadAt(ctx, p, off)
		if err != nil || n != len(p) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
		for _, i := range []int{0, len(p) - 8} {
			if got := binary.LittleEndian.Uint64(p[i:]); got != uint64(off)+uint64(i)+1 {
				t.Fatalf("word at %d = %d, want %d", off+int64(i), got, uint64(off)+uint64(i)+1)
			}
		}
		if s := c.Stats(); s.Bytes > maxBytes {
			t.Fatalf("Bytes = %d > %d", s.Bytes, maxBytes)
		}
	}
	elapsed := time.Since(start)
	peak := procStatusKiB(t, "VmHWM") << 10
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := c.Stats()
	t.Logf("4 GiB in %v (%.0f MB/s); peak RSS %d MiB (budget %d MiB); heap sys %d MiB; %d GCs; total alloc %d MiB; stats %+v",
		elapsed.Round(time.Millisecond), size/elapsed.Seconds()/1e6, peak>>20, budget>>20,
		ms.HeapSys>>20, ms.NumGC, ms.TotalAlloc>>20, s)
	if peak > budget {
		t.Errorf("peak RSS %d MiB exceeds cache + 100 MiB = %d MiB", peak>>20, budget>>20)
	}
}
