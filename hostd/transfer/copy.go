package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance"
)

// zeroRun is the granularity of hole detection: a run of this many zero
// bytes is not written.
const zeroRun = 64 << 10

var zeros = make([]byte, zeroRun)

// chunk is one ChunkSize piece in flight. It is released to the buffer pool
// when both the writer and the hasher are done with it.
type chunk struct {
	idx  int64
	off  int64
	buf  []byte // len = bytes of this chunk
	refs atomic.Int32
}

// copyStats says what a copy did.
type copyStats struct {
	written int64 // bytes written (the rest became holes)
	retries int
}

// watch is how a copy tells its caller what happens to the source: bytes
// that arrived, and reads that failed and are tried again. Both may be nil.
type watch struct {
	moved func(n int64)
	retry func(r *Retry)
}

// Retry says that a source read failed and will be tried again. A nil
// *Retry, passed after one or more of these, says the read went through.
type Retry struct {
	Offset  int64         // where the next attempt starts: the last good byte
	Attempt int           // attempts that failed so far (1 after the first)
	Failing time.Duration // since the first attempt started
	Wait    time.Duration // back-off before the next attempt
	For     time.Duration // no attempt starts later than this after the first
	Err     error         // what failed (no credentials: errors never carry them)
}

// String is a one-line account for a user, e.g. "source read at 1.2 GiB
// failed (attempt 2, 3s in; retrying in 2s, for up to 30s): glance: ...
// connection refused".
func (r *Retry) String() string {
	return fmt.Sprintf("source read at %s failed (attempt %d, %s in; retrying in %s, for up to %s): %v",
		sizeString(r.Offset), r.Attempt, roundDuration(r.Failing), roundDuration(r.Wait), roundDuration(r.For), r.Err)
}

// roundDuration rounds d for a reader: to seconds from 10 s up, else to
// tenths of a second, and below one to milliseconds.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// sizeString prints n bytes with a binary unit, as the CLI does.
func sizeString(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + units[i:i+1] + "iB"
}

// copyVerified copies src into f: readers fetch chunks in offset order,
// writers write their non-zero runs at the same offsets, and one hasher
// feeds h in offset order through a reorder buffer, so the digest is known
// when the last chunk lands and no second pass is needed. w.moved is called
// as the bytes of each piece arrive from the source.
func (e *Engine) copyVerified(ctx context.Context, src cache.BlockSource, f *volumeWriter, h hash.Hash, w watch) (copyStats, error) {
	size := src.Size()
	var st copyStats
	if size == 0 {
		return st, nil
	}
	chunkSize := int64(e.cfg.ChunkSize)
	nChunks := (size + chunkSize - 1) / chunkSize
	bufSize := min(chunkSize, size)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var errOnce sync.Once
	var firstErr error
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel(err) })
	}

	free := make(chan []byte, e.cfg.Buffers)
	for range e.cfg.Buffers {
		free <- nil // allocated on first use
	}
	toWrite := make(chan *chunk, e.cfg.Buffers)
	toHash := make(chan *chunk, e.cfg.Buffers)
	var written, retries atomic.Int64

	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 {
			free <- c.buf[:cap(c.buf)]
		}
	}

	// A reader takes a buffer before it claims the next index, so the
	// lowest unhashed chunk always holds a buffer and the reorder buffer
	// cannot starve it.
	var claimMu sync.Mutex
	next := int64(0)
	var readers sync.WaitGroup
	for range e.cfg.Readers {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				var buf []byte
				select {
				case buf = <-free:
				case <-ctx.Done():
					return
				}
				claimMu.Lock()
				i := next
				next++
				claimMu.Unlock()
				if i >= nChunks {
					free <- buf
					return
				}
				if buf == nil {
					buf = alignedBuf(int(bufSize))
				}
				off := i * chunkSize
				n := min(chunkSize, size-off)
				c := &chunk{idx: i, off: off, buf: buf[:n]}
				r, err := e.readChunk(ctx, src, c.buf, off, w)
				retries.Add(int64(r))
				if err != nil {
					free <- buf
					fail(err)
					return
				}
				c.refs.Store(2)
				toWrite <- c // never blocks: at most Buffers chunks exist
				toHash <- c
			}
		}()
	}

	var workers sync.WaitGroup
	for range e.cfg.Writers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for c := range toWrite {
				if ctx.Err() == nil {
					n, err := writeSparse(f, c.buf, c.off)
					written.Add(n)
					if err != nil {
						fail(err)
					}
				}
				release(c)
			}
		}()
	}
	workers.Add(1)
	go func() {
		defer workers.Done()
		pending := map[int64]*chunk{}
		want := int64(0)
		for c := range toHash {
			pending[c.idx] = c
			for {
				p, ok := pending[want]
				if !ok {
					break
				}
				delete(pending, want)
				if ctx.Err() == nil {
					h.Write(p.buf)
				}
				release(p)
				want++
			}
		}
		for _, p := range pending { // only after a failure
			release(p)
		}
	}()

	readers.Wait()
	close(toWrite)
	close(toHash)
	workers.Wait()
	st.written, st.retries = written.Load(), int(retries.Load())
	if firstErr != nil {
		return st, firstErr
	}
	if err := context.Cause(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// readAt is src.ReadAt with the engine's retries (io.ReaderAt contract).
func (e *Engine) readAt(ctx context.Context, src cache.BlockSource, p []byte, off int64, retry func(*Retry)) (int, error) {
	want := len(p)
	if rest := src.Size() - off; off >= 0 && int64(want) > rest {
		want = int(max(rest, 0))
	}
	n, _, err := e.readRetry(ctx, src, p[:want], off, retry)
	if err == nil && want < len(p) {
		err = io.EOF
	}
	return n, err
}

// readPiece is the most one source call of a copy asks for: the rate limit
// paces by it and progress is reported by it, so a slow source still shows
// its bytes moving (a whole chunk may take many seconds).
const readPiece = 1 << 20

// readChunk fills p from src at off, one readPiece at a time, each held to
// the engine's rate limit, retried from the last good byte with back-off,
// and reported to w.moved once it arrived. It returns the retries it made.
func (e *Engine) readChunk(ctx context.Context, src cache.BlockSource, p []byte, off int64, w watch) (int, error) {
	retries := 0
	for done := 0; done < len(p); {
		k := min(len(p)-done, readPiece)
		if err := e.pace.wait(ctx, k); err != nil {
			return retries, err
		}
		_, r, err := e.readRetry(ctx, src, p[done:done+k], off+int64(done), w.retry)
		retries += r
		if err != nil {
			return retries, err
		}
		if w.moved != nil {
			w.moved(int64(k))
		}
		done += k
	}
	return retries, nil
}

// readRetry fills p from src at off, retrying a failed read from the last
// good byte with back-off as long as the next attempt starts within
// RetryFor of the first. retry, if set, is told of every retry before its
// back-off, and called with nil when a retried read went through. It
// returns the bytes read and the retries made.
func (e *Engine) readRetry(ctx context.Context, src cache.BlockSource, p []byte, off int64, retry func(*Retry)) (int, int, error) {
	got := 0
	backoff := e.cfg.Backoff
	begin := time.Now()
	for attempt := 0; ; attempt++ {
		n, err := src.ReadAt(ctx, p[got:], off+int64(got))
		got += n
		if got == len(p) {
			if attempt > 0 && retry != nil {
				retry(nil)
			}
			return got, attempt, nil
		}
		if err == nil || err == io.EOF {
			err = fmt.Errorf("source ended at %d, before its size %d: %w", off+int64(got), src.Size(), io.ErrUnexpectedEOF)
		}
		if ctx.Err() != nil {
			return got, attempt, context.Cause(ctx)
		}
		if !transient(err) {
			return got, attempt, fmt.Errorf("transfer: read source at %d: %w", off+int64(got), err)
		}
		failing := time.Since(begin)
		if failing+backoff > e.cfg.RetryFor {
			tries := "1 attempt"
			if attempt > 0 {
				tries = strconv.Itoa(attempt+1) + " attempts"
			}
			return got, attempt, fmt.Errorf("transfer: read source at %d: gave up after %s in %s: %w",
				off+int64(got), tries, roundDuration(failing), err)
		}
		e.log.Warn("source read failed; retrying", "offset", off+int64(got), "attempt", attempt+1,
			"failing", failing, "backoff", backoff, "err", err)
		if retry != nil {
			retry(&Retry{Offset: off + int64(got), Attempt: attempt + 1, Failing: failing, Wait: backoff,
				For: e.cfg.RetryFor, Err: err})
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return got, attempt, context.Cause(ctx)
		}
		backoff = min(2*backoff, e.cfg.MaxBackoff)
	}
}

// transient reports whether retrying a read may help.
func transient(err error) bool {
	var nf interface{ NotFound() bool }
	if errors.As(err, &nf) && nf.NotFound() {
		return false
	}
	for _, perm := range []error{glance.ErrSizeMismatch, glance.ErrTokenRejected, glance.ErrUnauthorized,
		glance.ErrClosed, cache.ErrClosed, cache.ErrNegativeOffset} {
		if errors.Is(err, perm) {
			return false
		}
	}
	return true
}

// writeSparse writes the runs of p that are not all zeros at off and
// returns the bytes written. The file must read as zeros where nothing is
// written (a new file, extended with ftruncate at the end).
func writeSparse(f io.WriterAt, p []byte, off int64) (int64, error) {
	var written int64
	start := -1 // start of the current data run
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		at := off + int64(start)
		n, err := f.WriteAt(p[start:end], at)
		written += int64(n)
		start = -1
		if err != nil {
			return fmt.Errorf("transfer: write at %d: %w", at, err)
		}
		return nil
	}
	for i := 0; i < len(p); i += zeroRun {
		end := min(i+zeroRun, len(p))
		if bytes.Equal(p[i:end], zeros[:end-i]) {
			if err := flush(i); err != nil {
				return written, err
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return written, flush(len(p))
}
