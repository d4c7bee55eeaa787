package nbd

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
)

const sparseBlock = 64 << 10

// sparseData is 1 MiB + 100 bytes: blocks 0, 3 and the tail hold data, the
// rest is zero.
func sparseData() []byte {
	b := make([]byte, 1<<20+100)
	copy(b[0:], patterned(sparseBlock, 3))
	copy(b[3*sparseBlock:], patterned(sparseBlock, 4))
	copy(b[1<<20:], patterned(100, 5))
	return b
}

func transmissionExports() (*staticExports, *flakySource) {
	flaky := &flakySource{memSource: &memSource{data: patterned(1<<20, 7), id: "flaky"}}
	return newExports(
		Export{Name: "plain", Source: &memSource{data: patterned(1000, 1), id: "plain"}},
		Export{Name: "sparse", Source: &mapSource{memSource: &memSource{data: sparseData(), id: "sparse"}, block: sparseBlock}},
		Export{Name: "flaky", Source: flaky},
	), flaky
}

// Simple replies: every command, one connection, the stream stays in sync.
func TestTransmissionSimple(t *testing.T) {
	ex, _ := transmissionExports()
	ts := startServer(t, Config{}, ex)
	c := dial(t, ts.sock)
	if size, _ := c.open("plain", false, false); size != 1000 {
		t.Fatalf("size %d", size)
	}
	data := patterned(1000, 1)
	tests := []struct {
		name    string
		req     request
		payload []byte
		errno   uint32
		want    []byte
	}{
		{"whole export, not a multiple of 512", request{typ: cmdRead, offset: 0, length: 1000}, nil, 0, data},
		{"last byte", request{typ: cmdRead, offset: 999, length: 1}, nil, 0, data[999:]},
		{"one past the end", request{typ: cmdRead, offset: 999, length: 2}, nil, errInval, nil},
		{"offset past the end", request{typ: cmdRead, offset: 1 << 40, length: 1}, nil, errInval, nil},
		{"offset overflow", request{typ: cmdRead, offset: ^uint64(0), length: 2}, nil, errInval, nil},
		{"zero length", request{typ: cmdRead, offset: 0, length: 0}, nil, errInval, nil},
		{"over max block size", request{typ: cmdRead, offset: 0, length: 32<<20 + 1}, nil, errInval, nil},
		{"unknown flag", request{typ: cmdRead, flags: 1 << 9, offset: 0, length: 1}, nil, errInval, nil},
		{"DF without structured replies", request{typ: cmdRead, flags: cmdFlagDF, offset: 0, length: 1}, nil, errInval, nil},
		{"write is refused, payload skipped", request{typ: cmdWrite, offset: 0, length: 300}, bytes.Repeat([]byte{1}, 300), errPerm, nil},
		{"trim", request{typ: cmdTrim, offset: 0, length: 512}, nil, errPerm, nil},
		{"write zeroes", request{typ: cmdWriteZeroes, offset: 0, length: 512}, nil, errPerm, nil},
		{"flush", request{typ: cmdFlush}, nil, 0, nil},
		{"cache is unsupported", request{typ: cmdCache, offset: 0, length: 10}, nil, errInval, nil},
		{"unknown command", request{typ: 99}, nil, errInval, nil},
		{"block status without meta context", request{typ: cmdBlockStatus, offset: 0, length: 512}, nil, errInval, nil},
		{"read after all that", request{typ: cmdRead, offset: 10, length: 20}, nil, 0, data[10:30]},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			tt.req.handle = uint64(1000 + i)
			c.send(tt.req, tt.payload)
			h, errno, got := c.simpleReply(len(tt.want))
			if h != tt.req.handle || errno != tt.errno || !bytes.Equal(got, tt.want) {
				t.Fatalf("handle %d errno %d (want %d) data ok %v", h, errno, tt.errno, bytes.Equal(got, tt.want))
			}
		})
	}
}

// Structured replies: holes, DF, errors as chunks.
func TestTransmissionStructured(t *testing.T) {
	ex, _ := transmissionExports()
	ts := startServer(t, Config{}, ex)
	c := dial(t, ts.sock)
	size, flags := c.open("sparse", true, true)
	data := sparseData()
	if size != uint64(len(data)) || flags&flagSendDF == 0 {
		t.Fatalf("size %d flags %#x", size, flags)
	}
	tests := []struct {
		name  string
		req   request
		errno uint32
		holes int // hole chunks expected
		nData int // data chunks expected
	}{
		{"all", request{typ: cmdRead, offset: 0, length: uint32(len(data))}, 0, 2, 3},
		{"unaligned inside a hole", request{typ: cmdRead, offset: sparseBlock + 5, length: 100}, 0, 1, 0},
		{"data then hole", request{typ: cmdRead, offset: sparseBlock - 10, length: 20}, 0, 1, 1},
		{"DF gives one data chunk", request{typ: cmdRead, flags: cmdFlagDF, offset: 0, length: 5 * sparseBlock}, 0, 0, 1},
		{"tail", request{typ: cmdRead, offset: 1 << 20, length: 100}, 0, 0, 1},
		{"past end is an error chunk", request{typ: cmdRead, offset: 1 << 20, length: 101}, errInval, 0, 0},
		{"zero length", request{typ: cmdRead, offset: 0, length: 0}, errInval, 0, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			tt.req.handle = uint64(i)
			c.send(tt.req, nil)
			r := c.readStructured(tt.req.offset, int(tt.req.length))
			if r.errno != tt.errno {
				t.Fatalf("errno %d (%q), want %d", r.errno, r.msg, tt.errno)
			}
			nData := 0
			for _, ch := range r.chunks {
				if ch.handle != tt.req.handle {
					t.Fatalf("chunk handle %d", ch.handle)
				}
				if ch.typ == replyTypeOffsetData {
					nData++
				}
			}
			if r.holes != tt.holes || nData != tt.nData {
				t.Fatalf("%d holes %d data chunks, want %d and %d", r.holes, nData, tt.holes, tt.nData)
			}
			if tt.errno == 0 && !bytes.Equal(r.data, data[tt.req.offset:tt.req.offset+uint64(tt.req.length)]) {
				t.Fatalf("data differs")
			}
			if last := r.chunks[len(r.chunks)-1]; last.flags&replyFlagDone == 0 {
				t.Fatalf("last chunk lacks DONE")
			}
		})
	}
}

func blockStatus(t *testing.T, c *rawClient, handle uint64, flags uint16, off uint64, n uint32) (errno uint32, ext [][2]uint32) {
	t.Helper()
	c.send(request{typ: cmdBlockStatus, flags: flags, handle: handle, offset: off, length: n}, nil)
	ch := c.chunk()
	if ch.handle != handle || ch.flags&replyFlagDone == 0 {
		t.Fatalf("chunk %+v", ch)
	}
	switch ch.typ {
	case replyTypeError:
		return be.Uint32(ch.payload), nil
	case replyTypeBlockStatus:
	default:
		t.Fatalf("chunk type %d", ch.typ)
	}
	if (len(ch.payload)-4)%8 != 0 || be.Uint32(ch.payload) != metaContextID {
		t.Fatalf("payload % x", ch.payload)
	}
	var sum uint64
	for p := ch.payload[4:]; len(p) > 0; p = p[8:] {
		ext = append(ext, [2]uint32{be.Uint32(p), be.Uint32(p[4:])})
		sum += uint64(be.Uint32(p))
	}
	if len(ext) == 0 || sum > uint64(n) {
		t.Fatalf("extents %v sum %d for length %d", ext, sum, n)
	}
	return 0, ext
}

func TestBlockStatus(t *testing.T) {
	ex, _ := transmissionExports()
	ts := startServer(t, Config{}, ex)
	const hz = stateHole | stateZero
	t.Run("mapper", func(t *testing.T) {
		c := dial(t, ts.sock)
		c.open("sparse", true, true)
		tests := []struct {
			name  string
			flags uint16
			off   uint64
			n     uint32
			errno uint32
			want  [][2]uint32
		}{
			{"whole", 0, 0, 1<<20 + 100, 0, [][2]uint32{{sparseBlock, 0}, {2 * sparseBlock, hz}, {sparseBlock, 0}, {12 * sparseBlock, hz}, {100, 0}}},
			{"req one", cmdFlagReqOne, 0, 1<<20 + 100, 0, [][2]uint32{{sparseBlock, 0}}},
			{"unaligned in a hole", 0, sparseBlock + 1, 10, 0, [][2]uint32{{10, hz}}},
			{"past end", 0, 1 << 20, 101, errInval, nil},
			{"zero length", 0, 0, 0, errInval, nil},
			{"bad flag", cmdFlagDF, 0, 10, errInval, nil},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c.t = t
				errno, got := blockStatus(t, c, uint64(i), tt.flags, tt.off, tt.n)
				if errno != tt.errno || len(got) != len(tt.want) {
					t.Fatalf("errno %d extents %v, want %d %v", errno, got, tt.errno, tt.want)
				}
				for j := range got {
					if got[j] != tt.want[j] {
						t.Fatalf("extents %v, want %v", got, tt.want)
					}
				}
			})
		}
	})
	t.Run("no mapper is all data", func(t *testing.T) {
		c := dial(t, ts.sock)
		c.open("plain", true, true)
		errno, got := blockStatus(t, c, 1, 0, 0, 1000)
		if errno != 0 || len(got) != 1 || got[0] != [2]uint32{1000, 0} {
			t.Fatalf("errno %d extents %v", errno, got)
		}
	})
	t.Run("meta context for another export is dropped", func(t *testing.T) {
		c := dial(t, ts.sock)
		c.greet(clientFixedNewstyle | clientNoZeroes)
		c.opt(optStructuredReply, nil)
		c.optReplies()
		c.opt(optSetMetaContext, metaData("sparse", metaBaseName))
		c.optReplies()
		c.open2("plain")
		if errno, _ := blockStatus(t, c, 1, 0, 0, 10); errno != errInval {
			t.Fatalf("errno %d, want EINVAL", errno)
		}
	})
}

// A failing source gives EIO on a live connection; once it recovers, the
// next read on the same connection succeeds.
func TestReadErrorKeepsConnection(t *testing.T) {
	for _, structured := range []bool{false, true} {
		ex, flaky := transmissionExports()
		ts := startServer(t, Config{}, ex)
		c := dial(t, ts.sock)
		c.open("flaky", structured, false)
		read := func(h uint64) (uint32, []byte) {
			c.send(request{typ: cmdRead, handle: h, offset: 4096, length: 8192}, nil)
			if structured {
				r := c.readStructured(4096, 8192)
				return r.errno, r.data
			}
			_, errno, data := c.simpleReply(8192)
			return errno, data
		}
		flaky.failing.Store(true)
		if errno, _ := read(1); errno != errIO {
			t.Fatalf("structured=%v: errno %d, want EIO", structured, errno)
		}
		flaky.failing.Store(false)
		errno, data := read(2)
		if errno != 0 || !bytes.Equal(data, flaky.data[4096:4096+8192]) {
			t.Fatalf("structured=%v: after recovery errno %d", structured, errno)
		}
	}
}

// A read that outlives ReadTimeout is an EIO, not a hang.
func TestReadTimeout(t *testing.T) {
	ex, flaky := transmissionExports()
	flaky.gate = make(chan struct{}) // never opens
	ts := startServer(t, Config{ReadTimeout: 100 * time.Millisecond}, ex)
	c := dial(t, ts.sock)
	c.open("flaky", false, false)
	start := time.Now()
	c.send(request{typ: cmdRead, handle: 1, offset: 0, length: 10}, nil)
	if _, errno, _ := c.simpleReply(10); errno != errIO {
		t.Fatalf("errno %d", errno)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

// Pipelined reads run concurrently, never more than MaxInFlight at once,
// and every reply matches its request.
func TestPipelinedConcurrent(t *testing.T) {
	ex, flaky := transmissionExports()
	flaky.gate = make(chan struct{})
	flaky.started = make(chan struct{}, 1000)
	const maxInFlight = 4
	ts := startServer(t, Config{MaxInFlight: maxInFlight}, ex)
	c := dial(t, ts.sock)
	c.open("flaky", false, false)
	const n = 64
	for i := range n {
		c.send(request{typ: cmdRead, handle: uint64(i), offset: uint64(i) * 1000, length: uint32(100 + i)}, nil)
	}
	// All workers block on the gate: exactly maxInFlight reads start.
	for range maxInFlight {
		select {
		case <-flaky.started:
		case <-time.After(5 * time.Second):
			t.Fatalf("reads did not start concurrently")
		}
	}
	select {
	case <-flaky.started:
		t.Fatalf("more than %d reads in flight", maxInFlight)
	case <-time.After(100 * time.Millisecond):
	}
	close(flaky.gate)
	seen := map[uint64]bool{}
	for range n {
		h := c.readN(16)
		handle := be.Uint64(h[8:])
		if be.Uint32(h) != magicSimpleReply || be.Uint32(h[4:]) != 0 || handle >= n || seen[handle] {
			t.Fatalf("reply % x", h)
		}
		seen[handle] = true
		got := c.readN(int(100 + handle))
		if off := handle * 1000; !bytes.Equal(got, flaky.data[off:off+100+handle]) {
			t.Fatalf("handle %d: wrong data", handle)
		}
	}
	if p := flaky.peak.Load(); p != maxInFlight {
		t.Fatalf("peak concurrency %d, want %d", p, maxInFlight)
	}
}

// Replies go out in completion order: a fast read is not stuck behind a slow one.
func TestRepliesOutOfOrder(t *testing.T) {
	slowGate := make(chan struct{})
	slow := &flakySource{memSource: &memSource{data: patterned(4096, 1)}, gate: slowGate}
	ex := newExports(Export{Name: "x", Source: &splitSource{slow: slow, fast: &memSource{data: patterned(4096, 1)}}})
	ts := startServer(t, Config{}, ex)
	c := dial(t, ts.sock)
	c.open("x", false, false)
	c.send(request{typ: cmdRead, handle: 1, offset: 0, length: 10}, nil)    // slow half
	c.send(request{typ: cmdRead, handle: 2, offset: 2048, length: 10}, nil) // fast half
	if h, errno, _ := c.simpleReply(10); h != 2 || errno != 0 {
		t.Fatalf("first reply handle %d errno %d, want the fast read", h, errno)
	}
	close(slowGate)
	if h, errno, _ := c.simpleReply(10); h != 1 || errno != 0 {
		t.Fatalf("second reply handle %d errno %d", h, errno)
	}
}

// splitSource sends reads below 2048 to slow, the rest to fast.
type splitSource struct {
	slow, fast cache.BlockSource
}

func (s *splitSource) Size() int64      { return s.fast.Size() }
func (s *splitSource) Identity() string { return "split" }
func (s *splitSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 2048 {
		return s.slow.ReadAt(ctx, p, off)
	}
	return s.fast.ReadAt(ctx, p, off)
}

// Protocol violations close that connection only.
func TestBadRequestsClose(t *testing.T) {
	ex, _ := transmissionExports()
	ts := startServer(t, Config{}, ex)
	tests := []struct {
		name string
		send func(c *rawClient)
	}{
		{"bad magic", func(c *rawClient) { c.write(bytes.Repeat([]byte{0x42}, requestBytes)) }},
		{"giant write", func(c *rawClient) {
			c.send(request{typ: cmdWrite, offset: 0, length: 1 << 31}, nil)
		}},
		{"early EOF inside a header", func(c *rawClient) {
			c.write(appendRequest(nil, request{typ: cmdRead, length: 1})[:10])
			_ = c.c.(interface{ CloseWrite() error }).CloseWrite()
		}},
		{"early EOF inside a write payload", func(c *rawClient) {
			c.send(request{typ: cmdWrite, length: 4096}, make([]byte, 100))
			_ = c.c.(interface{ CloseWrite() error }).CloseWrite()
		}},
		{"disconnect", func(c *rawClient) { c.send(request{typ: cmdDisc}, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts.sock)
			c.open("plain", false, false)
			tt.send(c)
			c.expectClosed()
		})
	}
	// The server is still fine.
	c := dial(t, ts.sock)
	c.open("plain", false, false)
	c.checkRead(0, 1000, patterned(1000, 1))
}

// A panicking source closes its connection; the daemon lives on.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	ex, flaky := transmissionExports()
	flaky.panicing.Store(true)
	ts := startServer(t, Config{}, ex)
	c := dial(t, ts.sock)
	c.open("flaky", false, false)
	c.send(request{typ: cmdRead, handle: 1, offset: 0, length: 10}, nil)
	c.expectClosed()
	c2 := dial(t, ts.sock)
	c2.open("plain", false, false)
	c2.checkRead(0, 1000, patterned(1000, 1))
}

// NBD_CMD_DISC waits for reads in flight before closing.
func TestDisconnectDrainsInFlight(t *testing.T) {
	ex, flaky := transmissionExports()
	flaky.gate = make(chan struct{})
	flaky.started = make(chan struct{}, 1)
	ts := startServer(t, Config{}, ex)
	c := dial(t, ts.sock)
	c.open("flaky", false, false)
	c.send(request{typ: cmdRead, handle: 5, offset: 0, length: 10}, nil)
	<-flaky.started
	c.send(request{typ: cmdDisc}, nil)
	time.AfterFunc(100*time.Millisecond, func() { close(flaky.gate) })
	if h, errno, data := c.simpleReply(10); h != 5 || errno != 0 || !bytes.Equal(data, flaky.data[:10]) {
		t.Fatalf("reply handle %d errno %d", h, errno)
	}
	c.expectClosed()
}

// Shutdown lets the read in flight finish, closes the connection, stops
// Serve, and refuses new connections.
func TestShutdownDrains(t *testing.T) {
	ex, flaky := transmissionExports()
	flaky.gate = make(chan struct{})
	flaky.started = make(chan struct{}, 1)
	ts := startServer(t, Config{}, ex)
	idle := dial(t, ts.sock)
	idle.open("plain", false, false)
	hand := dial(t, ts.sock)
	hand.greet(clientFixedNewstyle) // stuck in the handshake
	c := dial(t, ts.sock)
	c.open("flaky", false, false)
	c.send(request{typ: cmdRead, handle: 9, offset: 0, length: 10}, nil)
	<-flaky.started

	var wg sync.WaitGroup
	var shutErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutErr = ts.srv.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	close(flaky.gate)
	if h, errno, _ := c.simpleReply(10); h != 9 || errno != 0 {
		t.Fatalf("in-flight read: handle %d errno %d", h, errno)
	}
	wg.Wait()
	if shutErr != nil {
		t.Fatalf("Shutdown: %v", shutErr)
	}
	c.expectClosed()
	idle.expectClosed()
	hand.expectClosed()
	select {
	case err := <-ts.served:
		ts.served <- err // for the cleanup check
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve still running after Shutdown")
	}
}

// Shutdown gives up when its ctx ends and drops stuck connections.
func TestShutdownBounded(t *testing.T) {
	ex, flaky := transmissionExports()
	flaky.gate = make(chan struct{}) // never opens
	flaky.started = make(chan struct{}, 1)
	srv := NewServer(Config{}, ex, testLogger(t))
	sock := tempSock(t)
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	c := dial(t, sock)
	c.open("flaky", false, false)
	c.send(request{typ: cmdRead, handle: 1, offset: 0, length: 10}, nil)
	<-flaky.started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	c.expectClosed()
}

// Cancelling Serve's ctx stops accepting and drops its connections.
func TestServeContextCancel(t *testing.T) {
	ex, _ := transmissionExports()
	srv := NewServer(Config{}, ex, testLogger(t))
	sock := tempSock(t)
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	c := dial(t, sock)
	c.open("plain", false, false)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve did not return")
	}
	c.expectClosed()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// The buffer budget is shared by all connections: with room for one 32 MiB
// read, a second connection's read waits until the first finishes.
func TestBufferBudgetAcrossConnections(t *testing.T) {
	gate := make(chan struct{})
	big := &flakySource{memSource: &memSource{data: patterned(40<<20, 3)}, gate: gate, started: make(chan struct{}, 10)}
	ex := newExports(Export{Name: "big", Source: big})
	ts := startServer(t, Config{MaxBufferBytes: 1}, ex) // clamped to 32 MiB
	c1, c2 := dial(t, ts.sock), dial(t, ts.sock)
	c1.open("big", false, false)
	c2.open("big", false, false)
	c1.send(request{typ: cmdRead, handle: 1, offset: 0, length: 32 << 20}, nil)
	<-big.started
	c2.send(request{typ: cmdRead, handle: 2, offset: 0, length: 1 << 20}, nil)
	select {
	case <-big.started:
		t.Fatalf("second read started while the budget was spent")
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	if h, errno, _ := c1.simpleReply(32 << 20); h != 1 || errno != 0 {
		t.Fatalf("first read: handle %d errno %d", h, errno)
	}
	if h, errno, data := c2.simpleReply(1 << 20); h != 2 || errno != 0 || !bytes.Equal(data, big.data[:1<<20]) {
		t.Fatalf("second read: handle %d errno %d", h, errno)
	}
}

func TestByteBudget(t *testing.T) {
	b := newByteBudget(10)
	ctx := context.Background()
	if err := b.acquire(ctx, 6); err != nil {
		t.Fatal(err)
	}
	// 6 does not fit; a later 1 must wait behind it (FIFO, no starvation).
	got := make(chan int64, 2)
	go func() { _ = b.acquire(ctx, 6); got <- 6 }()
	time.Sleep(50 * time.Millisecond)
	go func() { _ = b.acquire(ctx, 1); got <- 1 }()
	time.Sleep(50 * time.Millisecond)
	select {
	case n := <-got:
		t.Fatalf("acquire(%d) jumped the line", n)
	default:
	}
	b.release(6) // now both fit: 6 then 1
	if sum := <-got + <-got; sum != 7 || b.available() != 3 {
		t.Fatalf("granted %d, avail %d", sum, b.available())
	}
	// A cancelled waiter leaves the line and frees nothing it did not get.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- b.acquire(cctx, 10) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-errc; err == nil {
		t.Fatalf("cancelled acquire succeeded")
	}
	b.release(7)
	if err := b.acquire(ctx, 10); err != nil || b.available() != 0 {
		t.Fatalf("after release: %v avail %d", err, b.available())
	}
}

func (b *byteBudget) available() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.avail
}
