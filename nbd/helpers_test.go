package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// memSource is an in-memory BlockSource.
type memSource struct {
	data []byte
	id   string
}

func (m *memSource) Size() int64      { return int64(len(m.data)) }
func (m *memSource) Identity() string { return m.id }
func (m *memSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 || off > int64(len(m.data)) {
		return 0, fmt.Errorf("memsource: offset %d out of range", off)
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// mapSource is a memSource that reports aligned all-zero blocks as Zero,
// like a sparse-aware source would.
type mapSource struct {
	*memSource
	block int64
	maps  atomic.Int64
}

func (m *mapSource) Map(ctx context.Context, off, length int64) ([]cache.Extent, error) {
	m.maps.Add(1)
	end := min(off+length, m.Size())
	var out []cache.Extent
	for pos := off; pos < end; {
		bEnd := min((pos/m.block+1)*m.block, end)
		zero := true
		for _, b := range m.data[(pos/m.block)*m.block : min((pos/m.block+1)*m.block, m.Size())] {
			if b != 0 {
				zero = false
				break
			}
		}
		out = append(out, cache.Extent{Off: pos, Len: bEnd - pos, Zero: zero})
		pos = bEnd
	}
	return out, nil
}

// flakySource fails every read while failing is set, can hold reads until
// released, and counts concurrency.
type flakySource struct {
	*memSource
	failing  atomic.Bool
	panicing atomic.Bool
	gate     chan struct{} // nil: no wait; else reads wait for it to close
	inflight atomic.Int64
	peak     atomic.Int64
	started  chan struct{} // receives one value per started read, if non-nil
}

var errFlaky = errors.New("flaky: backend down")

func (f *flakySource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if f.panicing.Load() {
		panic("flaky: boom")
	}
	if f.failing.Load() {
		return 0, errFlaky
	}
	return f.memSource.ReadAt(ctx, p, off)
}

// staticExports is a mutable Exports for tests.
type staticExports struct {
	mu      sync.Mutex
	m       map[string]Export
	fail    map[string]error // names whose lookup fails with this error
	lookups map[string]int   // Lookup calls per name
}

func newExports(es ...Export) *staticExports {
	s := &staticExports{m: map[string]Export{}}
	for _, e := range es {
		s.m[e.Name] = e
	}
	return s
}

func (s *staticExports) Lookup(name string) (Export, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookups == nil {
		s.lookups = map[string]int{}
	}
	s.lookups[name]++
	if err, ok := s.fail[name]; ok {
		return Export{}, err
	}
	e, ok := s.m[name]
	if !ok {
		return Export{}, ErrUnknownExport
	}
	return e, nil
}

// count is the number of lookups of name so far.
func (s *staticExports) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups[name]
}

func (s *staticExports) List() []Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Export, 0, len(s.m))
	for _, e := range s.m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *staticExports) set(e Export) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[e.Name] = e
}

func patterned(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testServer runs a Server on a unix socket for the test's lifetime.
type testServer struct {
	srv    *Server
	sock   string
	served chan error
}

func startServer(t testing.TB, cfg Config, exports Exports) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbdt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: NewServer(cfg, exports, testLogger(t)), sock: sock, served: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ts.served <- ts.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := ts.srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		select {
		case err := <-ts.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
	})
	return ts
}

// rawClient speaks NBD byte by byte so tests can check the wire.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex // serialises request writes from several goroutines
}

func dial(t testing.TB, sock string) *rawClient {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *rawClient) readN(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// greet reads the server greeting and sends client flags.
func (c *rawClient) greet(flags uint32) {
	c.t.Helper()
	g := c.readN(18)
	if be.Uint64(g) != magicInit || be.Uint64(g[8:]) != magicOption {
		c.t.Fatalf("bad greeting % x", g)
	}
	if hf := be.Uint16(g[16:]); hf != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("handshake flags %#x", hf)
	}
	c.write(be.AppendUint32(nil, flags))
}

func (c *rawClient) opt(id uint32, data []byte) {
	c.t.Helper()
	b := be.AppendUint64(nil, magicOption)
	b = be.AppendUint32(b, id)
	b = be.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *rawClient) optReply() optReply {
	c.t.Helper()
	h := c.readN(20)
	if be.Uint64(h) != magicOptReply {
		c.t.Fatalf("bad option reply magic % x", h)
	}
	r := optReply{opt: be.Uint32(h[8:]), typ: be.Uint32(h[12:])}
	r.data = c.readN(int(be.Uint32(h[16:])))
	return r
}

// optReplies reads replies up to and including the final one (ACK or an
// error).
func (c *rawClient) optReplies() []optReply {
	c.t.Helper()
	var out []optReply
	for {
		r := c.optReply()
		out = append(out, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return out
		}
	}
}

func infoData(name string, infos ...uint16) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// open does a full handshake to name and returns size and flags.
func (c *rawClient) open(name string, structured, meta bool) (uint64, uint16) {
	c.t.Helper()
	c.greet(clientFixedNewstyle | clientNoZeroes)
	if structured {
		c.opt(optStructuredReply, nil)
		if r := c.optReplies(); r[len(r)-1].typ != repAck {
			c.t.Fatalf("structured reply refused: %+v", r)
		}
	}
	if meta {
		c.opt(optSetMetaContext, metaData(name, metaBaseName))
		rs := c.optReplies()
		if len(rs) != 2 || rs[0].typ != repMetaContext || rs[1].typ != repAck {
			c.t.Fatalf("set meta context: %+v", rs)
		}
	}
	c.opt(optGo, infoData(name))
	var size uint64
	var flags uint16
	for _, r := range c.optReplies() {
		switch {
		case r.typ == repInfo && be.Uint16(r.data) == infoExport:
			size, flags = be.Uint64(r.data[2:]), be.Uint16(r.data[10:])
		case r.typ != repInfo && r.typ != repAck:
			c.t.Fatalf("GO %q: reply type %#x %q", name, r.typ, r.data[min(len(r.data), 0):])
		}
	}
	return size, flags
}

func (c *rawClient) send(r request, payload []byte) {
	c.t.Helper()
	c.write(append(appendRequest(nil, r), payload...))
}

// simpleReply reads one simple reply and, on success, dataLen bytes.
func (c *rawClient) simpleReply(dataLen int) (handle uint64, errno uint32, data []byte) {
	c.t.Helper()
	h := c.readN(16)
	if be.Uint32(h) != magicSimpleReply {
		c.t.Fatalf("bad simple reply magic % x", h)
	}
	errno, handle = be.Uint32(h[4:]), be.Uint64(h[8:])
	if errno == 0 && dataLen > 0 {
		data = c.readN(dataLen)
	}
	return handle, errno, data
}

type chunk struct {
	flags, typ uint16
	handle     uint64
	payload    []byte
}

func (c *rawClient) chunk() chunk {
	c.t.Helper()
	h := c.readN(4)
	switch be.Uint32(h) {
	case magicStructured:
		h = append(h, c.readN(16)...)
		ch := chunk{flags: be.Uint16(h[4:]), typ: be.Uint16(h[6:]), handle: be.Uint64(h[8:])}
		ch.payload = c.readN(int(be.Uint32(h[16:])))
		return ch
	case magicSimpleReply:
		// A simple reply without payload, as allowed for non-READ
		// commands; report it as a done chunk with the errno.
		h = append(h, c.readN(12)...)
		ch := chunk{flags: replyFlagDone, typ: replyTypeNone, handle: be.Uint64(h[8:])}
		if e := be.Uint32(h[4:]); e != 0 {
			ch.typ = replyTypeError
			ch.payload = be.AppendUint32(nil, e)
			ch.payload = be.AppendUint16(ch.payload, 0)
		}
		return ch
	}
	c.t.Fatalf("bad reply magic % x", h)
	return chunk{}
}

// structuredRead is one reassembled structured reply to a READ.
type structuredRead struct {
	data   []byte
	errno  uint32
	msg    string
	chunks []chunk
	holes  int
}

// readStructured collects the chunks of one reply (assumes no other
// request is in flight) for a read of length at offset.
func (c *rawClient) readStructured(offset uint64, length int) structuredRead {
	c.t.Helper()
	out := structuredRead{data: make([]byte, length)}
	covered := 0
	for {
		ch := c.chunk()
		out.chunks = append(out.chunks, ch)
		switch ch.typ {
		case replyTypeOffsetData:
			o := be.Uint64(ch.payload)
			covered += copy(out.data[o-offset:], ch.payload[8:])
		case replyTypeOffsetHole:
			o, n := be.Uint64(ch.payload), be.Uint32(ch.payload[8:])
			clear(out.data[o-offset : o-offset+uint64(n)])
			covered += int(n)
			out.holes++
		case replyTypeError:
			out.errno = be.Uint32(ch.payload)
			out.msg = string(ch.payload[6 : 6+be.Uint16(ch.payload[4:])])
		case replyTypeNone:
		default:
			c.t.Fatalf("unexpected chunk type %d", ch.typ)
		}
		if ch.flags&replyFlagDone != 0 {
			if out.errno == 0 && covered != length {
				c.t.Fatalf("chunks cover %d of %d bytes", covered, length)
			}
			return out
		}
	}
}

// expectClosed checks that the server hung up.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	for {
		_, err := c.r.Read(b)
		if err == nil {
			continue // drain whatever the server sent before closing
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open")
		}
		return
	}
}

// tempSock returns a short socket path (sun_path is ~108 bytes).
func tempSock(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbdt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }
