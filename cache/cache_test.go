package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/cache/cachetest"
)

const bs = 4096 // block size of most tests: small, so sources span many blocks

// newCache makes a cache closed at the end of the test.
func newCache(t testing.TB, cfg cache.Config) *cache.Cache {
	t.Helper()
	c := cache.New(context.Background(), cfg, nil)
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func read(t *testing.T, src cache.BlockSource, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	got, err := src.ReadAt(context.Background(), p, off)
	if err != nil && !(err == io.EOF && got < n) {
		t.Fatalf("ReadAt(%d, %d): %d, %v", n, off, got, err)
	}
	return p[:got]
}

func TestConformance(t *testing.T) {
	configs := []cache.Config{
		// Tiny cache: constant eviction and buffer reuse under readers.
		{BlockSize: bs, MaxBytes: 8 * bs, ReadAheadBlocks: 4},
		// Roomy cache, larger blocks, read-ahead over whole sources.
		{BlockSize: 64 << 10, MaxBytes: 64 << 20},
		// No read-ahead.
		{BlockSize: 512, MaxBytes: 1 << 20, ReadAheadBlocks: -1},
	}
	for _, cfg := range configs {
		t.Run(fmt.Sprintf("bs=%d,max=%d,ra=%d", cfg.BlockSize, cfg.MaxBytes, cfg.ReadAheadBlocks), func(t *testing.T) {
			c := newCache(t, cfg)
			cachetest.Run(t, func(t *testing.T, data []byte) cache.BlockSource {
				return c.Open(cachetest.NewMemSource(data))
			})
			if s := c.Stats(); s.Bytes > cfg.MaxBytes {
				t.Errorf("Bytes = %d > MaxBytes %d", s.Bytes, cfg.MaxBytes)
			}
		})
	}
}

func TestDedup(t *testing.T) {
	data := cachetest.Data(16*bs, 1)
	src := cachetest.NewMemSource(data)
	gate := make(chan struct{})
	src.SetGate(gate)
	c := newCache(t, cache.Config{BlockSize: bs, MaxBytes: 64 * bs, ReadAheadBlocks: -1})
	v := c.Open(src)

	const readers = 32
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i % 7 * 100) // all inside block 0
			if got := read(t, v, off, 200); !bytes.Equal(got, data[off:off+200]) {
				t.Errorf("reader %d: wrong bytes", i)
			}
		}()
	}
	eventually(t, "all readers to wait", func() bool { return c.Stats().Misses == readers })
	close(gate)
	wg.Wait()
	if n := src.Calls(); n != 1 {
		t.Errorf("source calls = %d, want 1 for %d readers of one block", n, readers)
	}
	if s := c.Stats(); s.Fetches != 1 {
		t.Errorf("Fetches = %d, want 1", s.Fetches)
	}
}

func TestCancelledReaderDoesNotCancelFetch(t *testing.T) {
	data := cachetest.Data(4*bs, 2)
	src := cachetest.NewMemSource(data)
	gate := make(chan struct{})
	src.SetGate(gate)
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1})
	v := c.Open(src)

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := v.ReadAt(ctx, make([]byte, 10), 0)
		first <- err
	}()
	second := make(chan []byte, 1)
	go func() { second <- read(t, v, 5, 10) }()
	eventually(t, "both readers to wait", func() bool { return c.Stats().Misses == 2 })

	cancel()
	select {
	case err := <-first:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled reader: err = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancelled reader still waiting")
	}
	close(gate)
	if got := <-second; !bytes.Equal(got, data[5:15]) {
		t.Fatal("other reader got wrong bytes")
	}
	if got := read(t, v, 0, 10); !bytes.Equal(got, data[:10]) {
		t.Fatal("wrong bytes after the fetch")
	}
	if n := src.Calls(); n != 1 {
		t.Errorf("source calls = %d, want 1: the fetch should have survived the cancel and filled the cache", n)
	}
}

func TestFailedFetchNotCached(t *testing.T) {
	data := cachetest.Data(4*bs, 3)
	src := cachetest.NewMemSource(data)
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1})
	v := c.Open(src)

	// Every waiter of the failing fetch gets its error.
	gate := make(chan struct{})
	src.SetGate(gate)
	src.FailNext(1, nil)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := v.ReadAt(context.Background(), make([]byte, 10), 0)
			errs <- err
		}()
	}
	eventually(t, "three readers to wait", func() bool { return c.Stats().Misses == 3 })
	close(gate)
	for range 3 {
		if err := <-errs; !errors.Is(err, cachetest.ErrInjected) {
			t.Errorf("waiter err = %v, want ErrInjected", err)
		}
	}
	if s := c.Stats(); s.Bytes != 0 {
		t.Errorf("Bytes = %d after a failed fetch, want 0", s.Bytes)
	}
	// The next read retries.
	if got := read(t, v, 0, 10); !bytes.Equal(got, data[:10]) {
		t.Fatal("retry returned wrong bytes")
	}
	if n := src.Calls(); n != 2 {
		t.Errorf("source calls = %d, want 2 (failure, then retry)", n)
	}
}

// shortSource returns only the first keep bytes of each read, with err.
type shortSource struct {
	*cachetest.MemSource
	keep int
	err  error
}

// ReadAt serves the first keep bytes of the source and fails past them,
// like a connection that dies mid-stream.
func (s *shortSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= int64(s.keep) {
		return s.MemSource.ReadAt(ctx, p, off)
	}
	n, err := s.MemSource.ReadAt(ctx, p[:max(0, min(int64(len(p)), int64(s.keep)-off))], off)
	if err != nil {
		return n, err
	}
	return n, s.err
}

// merge joins source calls that continue where the previous one ended: a
// fetch reads a run of blocks with one call per block, in order, which a
// streaming source serves from one open response.
func merge(reads []cachetest.Read) []cachetest.Read {
	var out []cachetest.Read
	for _, r := range reads {
		if n := len(out); n > 0 && out[n-1].Off+int64(out[n-1].Len) == r.Off {
			out[n-1].Len += r.Len
			continue
		}
		out = append(out, r)
	}
	return out
}

func TestPartialFetch(t *testing.T) {
	data := cachetest.Data(8*bs, 4)
	mem := cachetest.NewMemSource(data)
	broken := errors.New("connection reset")
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1})
	v := c.Open(&shortSource{MemSource: mem, keep: 2*bs + 100, err: broken})

	// The run of blocks 0..3 fails after two whole blocks and a bit.
	_, err := v.ReadAt(context.Background(), make([]byte, 4*bs), 0)
	if !errors.Is(err, broken) {
		t.Fatalf("err = %v, want the source's error", err)
	}
	if s := c.Stats(); s.Bytes != 2*bs {
		t.Errorf("Bytes = %d, want the 2 whole blocks read (%d)", s.Bytes, 2*bs)
	}
	calls := mem.Calls()
	if got := read(t, v, 0, 2*bs); !bytes.Equal(got, data[:2*bs]) {
		t.Fatal("cached part has wrong bytes")
	}
	if mem.Calls() != calls {
		t.Error("the blocks read before the failure were not cached")
	}

	// A short read without an error is an error too, never cached.
	v2 := c.Open(&shortSource{MemSource: cachetest.NewMemSource(cachetest.Data(8*bs, 5)), keep: 100})
	if _, err := v2.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("silent short read: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestEvictionRespectsMaxBytes(t *testing.T) {
	const maxBytes = 10 * bs
	data := cachetest.Data(256*bs+123, 6)
	c := newCache(t, cache.Config{BlockSize: bs, MaxBytes: maxBytes, ReadAheadBlocks: 4})
	v := c.Open(cachetest.NewMemSource(data))

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 300 {
				off := r.Int64N(int64(len(data)))
				if !cachetest.CheckRead(t, v, data, off, r.IntN(3*bs)) {
					return
				}
				if s := c.Stats(); s.Bytes > maxBytes {
					t.Errorf("Bytes = %d > MaxBytes %d", s.Bytes, maxBytes)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s := c.Stats(); s.Evictions == 0 || s.Bytes > maxBytes {
		t.Errorf("stats %+v: want evictions and Bytes <= %d", s, maxBytes)
	}
}

func TestIdentity(t *testing.T) {
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1})
	old := cachetest.NewMemSource(cachetest.Data(4*bs, 8))
	old.SetIdentity("img@v1")
	replaced := cachetest.NewMemSource(cachetest.Data(4*bs, 9))
	replaced.SetIdentity("img@v2")

	if got := read(t, c.Open(old), 0, bs); !bytes.Equal(got, cachetest.Data(4*bs, 8)[:bs]) {
		t.Fatal("old image: wrong bytes")
	}
	if got := read(t, c.Open(replaced), 0, bs); !bytes.Equal(got, cachetest.Data(4*bs, 9)[:bs]) {
		t.Fatal("replaced image served stale bytes")
	}

	// The same identity shares blocks: a second view of v1 hits the cache.
	again := cachetest.NewMemSource(cachetest.Data(4*bs, 8))
	again.SetIdentity("img@v1")
	if got := read(t, c.Open(again), 0, bs); !bytes.Equal(got, cachetest.Data(4*bs, 8)[:bs]) {
		t.Fatal("shared identity: wrong bytes")
	}
	if again.Calls() != 0 {
		t.Errorf("a view with a cached identity called its source %d times", again.Calls())
	}
}

func TestReadAhead(t *testing.T) {
	const nblocks = 64
	data := cachetest.Data(nblocks*bs, 10)
	src := cachetest.NewMemSource(data)
	c := newCache(t, cache.Config{BlockSize: bs, MaxBytes: 128 * bs, ReadAheadBlocks: 8})
	v := c.Open(src)

	read(t, v, 0, bs)  // first read: no read-ahead yet
	read(t, v, bs, bs) // sequential: read-ahead of blocks 2..9
	eventually(t, "read-ahead of blocks 2..9", func() bool {
		for _, r := range merge(src.Reads()) {
			if r.Off <= 2*bs && r.Off+int64(r.Len) >= 10*bs {
				return true
			}
		}
		return false
	})
	calls := src.Calls()
	read(t, v, 2*bs, 2*bs) // served by the read-ahead
	if src.Calls() != calls && c.Stats().Misses != 2 {
		t.Errorf("blocks 2..3 were not read ahead: %d more calls", src.Calls()-calls)
	}

	// A whole sequential pass in 1 KiB reads takes far fewer source calls
	// than blocks, and they arrive in increasing offset order.
	for off := int64(4 * bs); off < int64(len(data)); off += 1024 {
		if got := read(t, v, off, 1024); !bytes.Equal(got, data[off:off+1024]) {
			t.Fatalf("wrong bytes at %d", off)
		}
	}
	reads := src.Reads()
	if runs := merge(reads); len(runs) > nblocks/4+2 {
		t.Errorf("%d runs of source calls for %d blocks: read-ahead is not coalescing: %v", len(runs), nblocks, runs)
	}
	for i := 1; i < len(reads); i++ {
		if reads[i].Off < reads[i-1].Off+int64(reads[i-1].Len) {
			t.Errorf("source calls out of order: %v", reads)
			break
		}
	}
}

func TestReadAheadInterleavedStreams(t *testing.T) {
	const nblocks = 64
	data := cachetest.Data(nblocks*bs, 17)
	src := cachetest.NewMemSource(data)
	c := newCache(t, cache.Config{BlockSize: bs, MaxBytes: 128 * bs, ReadAheadBlocks: 8})
	v := c.Open(src)
	// Two readers take turns: one from block 0, one from block 32.
	for off := int64(0); off < 32*bs; off += 1024 {
		for _, base := range []int64{0, 32 * bs} {
			if got := read(t, v, base+off, 1024); !bytes.Equal(got, data[base+off:base+off+1024]) {
				t.Fatalf("wrong bytes at %d", base+off)
			}
		}
	}
	// Each stream's calls must continue one another (a streaming source
	// keeps a body per stream); how the two interleave in time is the
	// scheduler's.
	var streams [2][]cachetest.Read
	for _, r := range src.Reads() {
		i := r.Off / (32 * bs)
		streams[i] = append(streams[i], r)
	}
	if n := len(merge(streams[0])) + len(merge(streams[1])); n > 2*(32/4+2) {
		t.Errorf("%d runs of source calls for two interleaved streams of 32 blocks: %v", n, src.Reads())
	}
	// And read-ahead fetched runs of blocks, not one block per read.
	if f := c.Stats().Fetches; f > 2*(32/4+2) {
		t.Errorf("%d fetches for two interleaved streams of 32 blocks", f)
	}
}

func TestReadAheadIgnoresRandomReads(t *testing.T) {
	data := cachetest.Data(64*bs, 11)
	src := cachetest.NewMemSource(data)
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: 8})
	v := c.Open(src)
	for _, b := range []int64{40, 3, 20, 55, 9} {
		read(t, v, b*bs, 100)
	}
	time.Sleep(20 * time.Millisecond) // a wrongly started read-ahead would land here
	for _, r := range src.Reads() {
		if r.Len != bs {
			t.Errorf("random reads caused a read-ahead: %v", src.Reads())
			break
		}
	}
}

func TestCoalescing(t *testing.T) {
	data := cachetest.Data(16*bs, 12)
	src := cachetest.NewMemSource(data)
	c := newCache(t, cache.Config{BlockSize: bs, MaxBytes: 64 * bs, ReadAheadBlocks: -1})
	v := c.Open(src)

	// Blocks 2..9 missing: one call.
	if got := read(t, v, 2*bs+10, 7*bs); !bytes.Equal(got, data[2*bs+10:9*bs+10]) {
		t.Fatal("wrong bytes")
	}
	want := []cachetest.Read{{Off: 2 * bs, Len: 8 * bs}}
	if got := merge(src.Reads()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("source calls %v, want %v", got, want)
	}
	// The whole source: one call per missing run (0..1 and 10..15).
	if got := read(t, v, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	want = append(want, cachetest.Read{Off: 0, Len: 2 * bs}, cachetest.Read{Off: 10 * bs, Len: 6 * bs})
	if got := merge(src.Reads()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("source calls %v, want %v", got, want)
	}
}

func TestKnownZeroMap(t *testing.T) {
	// Blocks: 0 data, 1-2 zero, 3 data, 4 zero, 5 short data block.
	data := cachetest.Data(5*bs+100, 13)
	clear(data[bs : 3*bs])
	clear(data[4*bs : 5*bs])
	for _, i := range []int{10, 3*bs + 10, 5*bs + 10} {
		data[i] = 1
	}
	src := cachetest.NewMemSource(data)
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1})
	v := c.Open(src)
	m, ok := v.(cache.Mapper)
	if !ok {
		t.Fatal("cached view is not a Mapper")
	}
	ctx := context.Background()
	size := int64(len(data))

	ext, err := m.Map(ctx, 0, size)
	if err != nil || fmt.Sprint(ext) != fmt.Sprint([]cache.Extent{{Off: 0, Len: size}}) {
		t.Fatalf("Map before any read = %v, %v; want one data extent", ext, err)
	}
	if got := read(t, v, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	if s := c.Stats(); s.Bytes != 2*bs+100 {
		t.Errorf("Bytes = %d, want %d: zero blocks should hold no buffer", s.Bytes, 2*bs+100)
	}

	tests := []struct {
		off, length int64
		want        []cache.Extent
	}{
		{0, size, []cache.Extent{{0, bs, false}, {bs, 2 * bs, true}, {3 * bs, bs, false}, {4 * bs, bs, true}, {5 * bs, 100, false}}},
		{bs + 10, 100, []cache.Extent{{bs + 10, 100, true}}},
		{bs / 2, 3 * bs, []cache.Extent{{bs / 2, bs / 2, false}, {bs, 2 * bs, true}, {3 * bs, bs / 2, false}}},
		{4 * bs, 1 << 40, []cache.Extent{{4 * bs, bs, true}, {5 * bs, 100, false}}}, // clipped at Size
		{size, 10, nil},
		{size + 5, 10, nil},
		{0, 0, nil},
	}
	for _, tt := range tests {
		got, err := m.Map(ctx, tt.off, tt.length)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Map(%d, %d) = %v, %v; want %v", tt.off, tt.length, got, err, tt.want)
		}
	}
	if _, err := m.Map(ctx, -1, 10); !errors.Is(err, cache.ErrNegativeOffset) {
		t.Errorf("Map(-1) err = %v, want ErrNegativeOffset", err)
	}

	// Known zeros are served without the source, even after eviction of
	// everything else.
	calls := src.Calls()
	if got := read(t, v, bs, 2*bs); !bytes.Equal(got, make([]byte, 2*bs)) {
		t.Fatal("zero blocks read back non-zero")
	}
	if src.Calls() != calls {
		t.Error("known-zero blocks were fetched again")
	}
}

func TestFetchTimeout(t *testing.T) {
	src := cachetest.NewMemSource(cachetest.Data(4*bs, 14))
	src.SetLatency(time.Hour)
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1, FetchTimeout: 30 * time.Millisecond})
	start := time.Now()
	_, err := c.Open(src).ReadAt(context.Background(), make([]byte, 10), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded from the per-fetch bound", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestLifetimeAndClose(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := cache.New(ctx, cache.Config{BlockSize: bs, ReadAheadBlocks: -1}, nil)
	src := cachetest.NewMemSource(cachetest.Data(4*bs, 15))
	src.SetGate(make(chan struct{})) // never opens
	v := c.Open(src)
	errc := make(chan error, 1)
	go func() {
		_, err := v.ReadAt(context.Background(), make([]byte, 10), 0)
		errc <- err
	}()
	eventually(t, "the fetch to start", func() bool { return src.Calls() == 1 })
	cancel() // the daemon stops: its fetches end
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("reader hung after the lifetime ended")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("read after Close: err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStats(t *testing.T) {
	data := cachetest.Data(6*bs, 16)
	for i := 0; i < len(data); i += bs {
		data[i] = 1 // no zero blocks: they would not be stored
	}
	c := newCache(t, cache.Config{BlockSize: bs, MaxBytes: 4 * bs, ReadAheadBlocks: -1})
	v := c.Open(cachetest.NewMemSource(data))
	read(t, v, 0, 2*bs)    // 2 misses, 1 fetch
	read(t, v, 0, 2*bs)    // 2 hits
	read(t, v, 2*bs, 2*bs) // 2 misses, 1 fetch
	read(t, v, 4*bs, bs)   // 1 miss, 1 fetch, 1 eviction
	want := cache.Stats{Hits: 2, Misses: 5, Fetches: 3, Evictions: 1, Bytes: 4 * bs}
	if got := c.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// streamSource models the Glance source: a call that continues the previous
// one rides the open stream, any other call pays for a new request.
type streamSource struct {
	*cachetest.MemSource
	mu   sync.Mutex
	end  int64
	cuts int
}

func (s *streamSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.mu.Lock()
	if off != s.end {
		s.cuts++
		time.Sleep(10 * time.Millisecond)
	}
	s.end = off + int64(len(p))
	s.mu.Unlock()
	return s.MemSource.ReadAt(ctx, p, off)
}

func TestSequentialReadKeepsTheStream(t *testing.T) {
	const size = 64 << 20
	data := cachetest.Data(size, 18)
	for i := 0; i < size; i += 1 << 20 {
		data[i] = 1 // no zero blocks: every block is fetched
	}
	src := &streamSource{MemSource: cachetest.NewMemSource(data), end: -1}
	c := newCache(t, cache.Config{MaxBytes: 32 << 20})
	v := c.Open(src)
	start := time.Now()
	p := make([]byte, 128<<10)
	for off := int64(0); off < size; off += int64(len(p)) {
		n, err := v.ReadAt(context.Background(), p, off)
		if err != nil || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d) = %d, %v or wrong bytes", off, n, err)
		}
	}
	s := c.Stats()
	t.Logf("64 MiB in %v, %d source calls, %d stream cuts, stats %+v", time.Since(start), len(src.Reads()), src.cuts, s)
	if src.cuts > 1 {
		t.Errorf("%d stream cuts for one sequential reader, want 1 (the first call): %v", src.cuts, src.Reads())
	}
}

// TestPipelinedSequentialRead is an NBD client with many requests in flight:
// workers take the next 256 KiB piece in turn, so reads arrive slightly out
// of order. Read-ahead should still see one stream.
func TestPipelinedSequentialRead(t *testing.T) {
	const size = 64 << 20
	data := cachetest.Data(size, 19)
	for i := 0; i < size; i += 1 << 20 {
		data[i] = 1
	}
	src := &streamSource{MemSource: cachetest.NewMemSource(data), end: -1}
	c := newCache(t, cache.Config{MaxBytes: 32 << 20})
	v := c.Open(src)
	var (
		mu   sync.Mutex
		next int64
		wg   sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 256<<10)
			for {
				mu.Lock()
				off := next
				next += int64(len(p))
				mu.Unlock()
				if off >= size {
					return
				}
				n, err := v.ReadAt(context.Background(), p, off)
				if err != nil || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
					t.Errorf("ReadAt(%d) = %d, %v or wrong bytes", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d source calls, %d stream cuts, stats %+v", len(src.Reads()), src.cuts, c.Stats())
	if src.cuts > 4 {
		t.Errorf("%d stream cuts for one pipelined sequential reader: %v", src.cuts, src.Reads())
	}
}

// A failure that wraps io.EOF (a connection closed mid-body is "…: EOF")
// reaches the reader with its own message, not as a short read.
func TestWrappedEOFIsAFailure(t *testing.T) {
	src := &shortSource{MemSource: cachetest.NewMemSource(cachetest.Data(4*bs, 2)), keep: bs,
		err: fmt.Errorf("glance: read image x: GET: %w", io.EOF)}
	c := newCache(t, cache.Config{BlockSize: bs, ReadAheadBlocks: -1})
	v := c.Open(src)
	p := make([]byte, bs)
	_, err := v.ReadAt(context.Background(), p, bs)
	if err == nil || !strings.Contains(err.Error(), "glance: read image x: GET: EOF") || strings.Contains(err.Error(), "short read") {
		t.Fatalf("read: %v, want the source's own failure", err)
	}
	// The true end of the data is still io.EOF.
	whole := c.Open(cachetest.NewMemSource(cachetest.Data(4*bs, 3)))
	if n, err := whole.ReadAt(context.Background(), make([]byte, 2*bs), 3*bs); n != bs || err != io.EOF {
		t.Fatalf("read across the end: %d, %v", n, err)
	}
}
