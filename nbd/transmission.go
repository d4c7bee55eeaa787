package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// conn is the transmission phase of one connection: a reader loop that
// parses requests and hands reads to at most MaxInFlight workers, whose
// replies go out in any order under one write lock.
type conn struct {
	r       *bufio.Reader
	w       io.Writer // the socket itself, so header+data go out in one writev
	sess    session
	size    int64
	pool    *bufPool
	budget  *byteBudget // nil: unbounded
	log     *slog.Logger
	readTO  time.Duration
	writeTO time.Duration

	ctx    context.Context // ends when the connection dies
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup // workers in flight

	wmu sync.Mutex

	// draining reports that the server is shutting down; a read error
	// is then the expected wake-up, not a client fault.
	draining func() bool
}

// errDrained ends a connection whose reader was stopped by Shutdown.
var errDrained = errors.New("nbd: connection drained for shutdown")

// serve runs the request loop until the client disconnects, breaks the
// protocol, or the server drains. It returns once every worker is done.
func (c *conn) serve() error {
	err := c.readLoop()
	if err != nil && !errors.Is(err, errDrained) {
		// The client is gone or broken: replies cannot be delivered, so
		// stop the backend reads too.
		c.cancel()
	}
	c.wg.Wait()
	return err
}

func (c *conn) readLoop() error {
	var hdr [requestBytes]byte
	for {
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			if c.draining != nil && c.draining() {
				return errDrained
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("nbd: client hung up without NBD_CMD_DISC: %w", err)
			}
			return fmt.Errorf("nbd: read request: %w", err)
		}
		req, err := parseRequest(hdr[:])
		if err != nil {
			return fmt.Errorf("nbd: parse request: %w", err)
		}
		if err := c.dispatch(req); err != nil {
			return err
		}
		if req.typ == cmdDisc {
			return nil
		}
	}
}

// dispatch answers cheap requests inline and hands reads and block status
// to a worker. An error ends the connection.
func (c *conn) dispatch(req request) error {
	switch req.typ {
	case cmdDisc:
		return nil
	case cmdWrite:
		if req.length > maxBlockSize {
			// Draining up to 4 GiB to stay in sync is not worth it.
			return fmt.Errorf("nbd: write of %d bytes: %w", req.length, errPayloadTooBig)
		}
		if _, err := io.CopyN(io.Discard, c.r, int64(req.length)); err != nil {
			return fmt.Errorf("nbd: skip write payload: %w", err)
		}
		return c.replyError(req, errPerm, "read-only export")
	case cmdTrim, cmdWriteZeroes:
		return c.replyError(req, errPerm, "read-only export")
	case cmdFlush:
		if req.flags&^cmdFlagFUA != 0 {
			return c.replyError(req, errInval, "unsupported command flags")
		}
		return c.replyOK(req)
	case cmdRead:
		if e, msg := c.checkRead(req); e != 0 {
			return c.replyError(req, e, msg)
		}
	case cmdBlockStatus:
		if e, msg := c.checkBlockStatus(req); e != 0 {
			return c.replyError(req, e, msg)
		}
	default:
		return c.replyError(req, errInval, "unsupported command")
	}
	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		return fmt.Errorf("nbd: wait for a worker: %w", context.Cause(c.ctx))
	}
	c.wg.Add(1)
	go c.work(req)
	return nil
}

func (c *conn) work(req request) {
	defer c.wg.Done()
	defer func() { <-c.sem }()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("nbd: panic serving request; closing connection",
				"cmd", req.typ, "offset", req.offset, "length", req.length,
				"panic", r, "stack", string(debug.Stack()))
			c.cancel()
		}
	}()
	var err error
	switch req.typ {
	case cmdRead:
		err = c.read(req)
	case cmdBlockStatus:
		err = c.blockStatus(req)
	}
	if err != nil {
		c.log.Debug("nbd: reply failed; closing connection", "err", err)
		c.cancel()
	}
}

func (c *conn) inRange(req request) bool {
	return req.offset <= uint64(c.size) && uint64(req.length) <= uint64(c.size)-req.offset
}

func (c *conn) checkRead(req request) (uint32, string) {
	allowed := cmdFlagFUA
	if c.sess.structured {
		allowed |= cmdFlagDF
	}
	switch {
	case req.flags&^allowed != 0:
		return errInval, "unsupported command flags"
	case req.length == 0:
		return errInval, "zero-length read"
	case req.length > maxBlockSize:
		return errInval, "read larger than the maximum block size"
	case !c.inRange(req):
		return errInval, "read past the end of the export"
	}
	return 0, ""
}

func (c *conn) checkBlockStatus(req request) (uint32, string) {
	switch {
	case !c.sess.structured || !c.sess.meta:
		return errInval, "no metadata context negotiated"
	case req.flags&^(cmdFlagFUA|cmdFlagReqOne) != 0:
		return errInval, "unsupported command flags"
	case req.length == 0:
		return errInval, "zero-length block status"
	case !c.inRange(req):
		return errInval, "block status past the end of the export"
	}
	return 0, ""
}

// read fills a buffer first and only then writes the reply, so a failed
// backend read becomes an error reply on a live connection.
func (c *conn) read(req request) error {
	off, n := int64(req.offset), int64(req.length)
	if c.budget != nil {
		// Wait for buffer memory under the connection's context, not the
		// read bound: queueing behind other reads is not a backend fault.
		if err := c.budget.acquire(c.ctx, n); err != nil {
			return fmt.Errorf("nbd: wait for buffer memory: %w", err)
		}
		defer c.budget.release(n)
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.readTO)
	defer cancel()
	exts := c.extents(ctx, off, n)
	bp := c.pool.get(int(n))
	defer c.pool.put(bp)
	buf := *bp
	src := c.sess.export.Source
	df := req.flags&cmdFlagDF != 0
	for _, e := range exts {
		part := buf[e.Off-off : e.Off-off+e.Len]
		if e.Zero {
			if !c.sess.structured || df {
				clear(part)
			}
			continue
		}
		if err := readFull(ctx, src, part, e.Off); err != nil {
			c.log.Warn("nbd: backend read failed", "export", c.sess.export.Name,
				"offset", e.Off, "length", e.Len, "err", err)
			return c.replyError(req, errIO, "read failed")
		}
	}

	if !c.sess.structured {
		return c.write(net.Buffers{appendSimpleReply(nil, req.handle, 0), buf})
	}
	if df {
		exts = []cache.Extent{{Off: off, Len: n}}
	}
	// One header block for all chunks, sized up front so the slices we
	// hand to writev stay valid.
	hdrs := make([]byte, 0, len(exts)*(structuredHeaderBytes+12))
	bufs := make(net.Buffers, 0, 2*len(exts))
	for i, e := range exts {
		var flags uint16
		if i == len(exts)-1 {
			flags = replyFlagDone
		}
		start := len(hdrs)
		if e.Zero {
			hdrs = appendChunkHeader(hdrs, flags, replyTypeOffsetHole, req.handle, 12)
			hdrs = be.AppendUint64(hdrs, uint64(e.Off))
			hdrs = be.AppendUint32(hdrs, uint32(e.Len))
			bufs = append(bufs, hdrs[start:])
			continue
		}
		hdrs = appendChunkHeader(hdrs, flags, replyTypeOffsetData, req.handle, uint32(8+e.Len))
		hdrs = be.AppendUint64(hdrs, uint64(e.Off))
		bufs = append(bufs, hdrs[start:], buf[e.Off-off:e.Off-off+e.Len])
	}
	return c.write(bufs)
}

// readFull reads len(p) bytes at off; a short read is an error even when
// the source says io.EOF, since we checked the range against Size.
func readFull(ctx context.Context, src cache.BlockSource, p []byte, off int64) error {
	n, err := src.ReadAt(ctx, p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("short read %d of %d: %w", n, len(p), io.ErrUnexpectedEOF)
	}
	return err
}

func (c *conn) blockStatus(req request) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.readTO)
	defer cancel()
	exts := c.extents(ctx, int64(req.offset), int64(req.length))
	if req.flags&cmdFlagReqOne != 0 {
		exts = exts[:1]
	}
	payload := be.AppendUint32(make([]byte, 0, 4+8*len(exts)), metaContextID)
	for _, e := range exts {
		var status uint32
		if e.Zero {
			status = stateHole | stateZero
		}
		payload = be.AppendUint32(payload, uint32(e.Len))
		payload = be.AppendUint32(payload, status)
	}
	hdr := appendChunkHeader(nil, replyFlagDone, replyTypeBlockStatus, req.handle, uint32(len(payload)))
	return c.write(net.Buffers{hdr, payload})
}

// maxExtents bounds one block status reply; the spec lets us describe less
// than the requested range.
const maxExtents = 64 << 10

// extents covers [off, off+n) with contiguous extents, merged by kind. With
// no Mapper, or a Mapper that fails or answers nonsense, it is all data
// (status 0 is always a safe answer).
func (c *conn) extents(ctx context.Context, off, n int64) []cache.Extent {
	whole := []cache.Extent{{Off: off, Len: n}}
	m, ok := c.sess.export.Source.(cache.Mapper)
	if !ok {
		return whole
	}
	got, err := m.Map(ctx, off, n)
	if err != nil {
		c.log.Debug("nbd: map failed; reporting data", "export", c.sess.export.Name,
			"offset", off, "length", n, "err", err)
		return whole
	}
	out, ok := normalizeExtents(got, off, n)
	if !ok {
		c.log.Debug("nbd: map returned inconsistent extents; reporting data",
			"export", c.sess.export.Name, "offset", off, "length", n)
		return whole
	}
	return out
}

// normalizeExtents clips in to [off, off+n) and merges neighbours of the
// same kind. An uncovered tail, or whatever lies past maxExtents, is
// reported as data, which is always safe. Gaps, overlaps and empty extents
// make it fail.
func normalizeExtents(in []cache.Extent, off, n int64) ([]cache.Extent, bool) {
	end := off + n
	pos := off
	out := make([]cache.Extent, 0, min(len(in), maxExtents)+1)
	for _, e := range in {
		if pos == end || len(out) == maxExtents {
			break
		}
		eEnd := e.Off + e.Len
		switch {
		case e.Len <= 0 || e.Off > pos:
			return nil, false // empty or a gap
		case eEnd <= pos && pos == off:
			continue // wholly before the range
		case e.Off < pos && pos != off:
			return nil, false // overlaps what we have
		}
		t := min(eEnd, end)
		if k := len(out) - 1; k >= 0 && out[k].Zero == e.Zero {
			out[k].Len += t - pos
		} else {
			out = append(out, cache.Extent{Off: pos, Len: t - pos, Zero: e.Zero})
		}
		pos = t
	}
	if pos < end {
		if k := len(out) - 1; k >= 0 && !out[k].Zero {
			out[k].Len += end - pos
		} else {
			out = append(out, cache.Extent{Off: pos, Len: end - pos})
		}
	}
	return out, true
}

func (c *conn) replyOK(req request) error {
	return c.write(net.Buffers{appendSimpleReply(nil, req.handle, 0)})
}

// replyError answers req with errno: an error chunk when structured replies
// are on (it carries the message, and READ must not get a simple reply),
// else a simple reply without payload.
func (c *conn) replyError(req request, errno uint32, msg string) error {
	if c.sess.structured {
		return c.write(net.Buffers{appendErrorChunk(nil, req.handle, errno, msg)})
	}
	return c.write(net.Buffers{appendSimpleReply(nil, req.handle, errno)})
}

// write sends one whole reply under the write lock, bounded by writeTO.
func (c *conn) write(bufs net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ctx.Err(); err != nil {
		return fmt.Errorf("nbd: write reply: %w", context.Cause(c.ctx))
	}
	if d, ok := c.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now().Add(c.writeTO))
	}
	if _, err := bufs.WriteTo(c.w); err != nil {
		return fmt.Errorf("nbd: write reply: %w", err)
	}
	return nil
}
