package glance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// readTuning holds the knobs of the read path shared by Source and
// HTTPSource. Zero fields take defaults in withDefaults.
type readTuning struct {
	RequestTimeout time.Duration
	IdleTimeout    time.Duration
	Retries        int
	Backoff        time.Duration
	MaxBackoff     time.Duration
	MaxIdleStreams int
	StreamIdleTime time.Duration
	MinRangeSize   int64
}

func (t readTuning) withDefaults() readTuning {
	// With these a read of a hung Glance fails within 4 x 10 s plus back-off
	// (about 42 s): the bound the mount and the NBD export promise.
	if t.RequestTimeout <= 0 {
		t.RequestTimeout = 10 * time.Second
	}
	if t.IdleTimeout <= 0 {
		t.IdleTimeout = 10 * time.Second
	}
	switch {
	case t.Retries == 0:
		t.Retries = 3
	case t.Retries < 0:
		t.Retries = 0
	}
	if t.Backoff <= 0 {
		t.Backoff = 250 * time.Millisecond
	}
	if t.MaxBackoff <= 0 {
		t.MaxBackoff = 8 * time.Second
	}
	if t.MaxIdleStreams <= 0 {
		t.MaxIdleStreams = 4
	}
	if t.StreamIdleTime <= 0 {
		t.StreamIdleTime = 30 * time.Second
	}
	if t.MinRangeSize <= 0 {
		t.MinRangeSize = 4 << 20
	}
	return t
}

type fetcherConfig struct {
	hc      *http.Client
	url     string
	header  http.Header // sent with every GET (HTTP sources)
	auth    authorizer
	size    int64
	name    string // "image ID" or a redacted URL, for errors and logs
	tune    readTuning
	noRange bool // known before the first read (size discovery saw a 200)
	log     *slog.Logger
}

// fetcher reads byte ranges of one URL of known size, keeping a few
// response bodies open between calls. It is the one implementation behind
// Source and HTTPSource.
type fetcher struct {
	cfg     fetcherConfig
	noRange atomic.Bool

	mu     sync.Mutex
	idle   []*stream // parked bodies, least recently used first
	ends   [endMarks]endMark
	endPos int
	closed bool
}

func newFetcher(cfg fetcherConfig) *fetcher {
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	f := &fetcher{cfg: cfg}
	f.noRange.Store(cfg.noRange)
	return f
}

// readAt implements io.ReaderAt semantics over retries.
func (f *fetcher) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("glance: read %s at %d: negative offset", f.cfg.name, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= f.cfg.size {
		return 0, io.EOF
	}
	want := p
	if rem := f.cfg.size - off; int64(len(want)) > rem {
		want = want[:rem]
	}
	n, err := f.fill(ctx, want, off)
	if err != nil {
		return n, fmt.Errorf("glance: read %s at %d (+%d): %w", f.cfg.name, off, len(want), err)
	}
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill reads all of p at off, retrying transient failures from the last
// good byte with exponential back-off.
func (f *fetcher) fill(ctx context.Context, p []byte, off int64) (int, error) {
	done := 0
	failures := 0
	renewed := false
	backoff := f.cfg.tune.Backoff
	for done < len(p) {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		n, err := f.readOnce(ctx, p[done:], off+int64(done))
		done += n
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return done, ctx.Err()
		}
		if errors.Is(err, errRenewed) {
			if !renewed {
				renewed = true
				continue
			}
			return done, &HTTPError{Op: "GET", Status: http.StatusUnauthorized, Err: ErrUnauthorized}
		}
		if !retryable(err) {
			return done, err
		}
		failures++
		if failures > f.cfg.tune.Retries {
			return done, fmt.Errorf("giving up after %d attempts: %w", failures, err)
		}
		f.cfg.log.Warn("glance: read failed, retrying", "src", f.cfg.name,
			"off", off+int64(done), "attempt", failures, "backoff", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return done, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, f.cfg.tune.MaxBackoff)
	}
	return done, nil
}

// retryable says whether another attempt may succeed.
func retryable(err error) bool {
	var he *HTTPError
	switch {
	case errors.As(err, &he):
		return retryableStatus(he.Status)
	case errors.Is(err, ErrSizeMismatch), errors.Is(err, ErrTokenRejected),
		errors.Is(err, ErrUnauthorized), errors.Is(err, ErrClosed), errors.Is(err, ErrUnknownSize):
		return false
	}
	// Connection errors, stalls, truncated bodies, bad Content-Range.
	return true
}

// readOnce reads a prefix of p at off from one body: a parked one that
// stands at off, or a new one. It returns n < len(p) with a nil error when
// the body ended where it should; the caller goes on from there.
func (f *fetcher) readOnce(ctx context.Context, p []byte, off int64) (int, error) {
	if f.noRange.Load() {
		s := f.take(off, true)
		if s == nil {
			var err error
			if s, err = f.open(ctx, 0, 0); err != nil {
				return 0, err
			}
		}
		return f.consume(ctx, s, p, off)
	}
	s := f.take(off, false)
	if s == nil {
		var err error
		s, err = f.open(ctx, off, f.window(off, len(p)))
		if errors.Is(err, ErrRangeUnsupported) {
			return 0, nil // noRange is now set: the next round streams from 0
		}
		if err != nil {
			return 0, err
		}
	}
	return f.consume(ctx, s, p, off)
}

// open sends a GET for [off, off+length), or for the whole file when
// length is 0. The request lives on after ctx (the body may be parked for
// a later call); ctx only cuts it while this call waits.
func (f *fetcher) open(ctx context.Context, off, length int64) (*stream, error) {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	rctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { cancel(ctx.Err()) })
	defer stop()

	req, err := http.NewRequestWithContext(rctx, http.MethodGet, f.cfg.url, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	addHeaders(req.Header, f.cfg.header)
	req.Header.Set("User-Agent", "glancegw")
	tok, err := f.cfg.auth.token(ctx, tokenMargin)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if tok != "" {
		req.Header.Set("X-Auth-Token", tok)
	}
	ranged := length > 0
	if ranged {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+length-1))
	}
	resp, err := f.cfg.hc.Do(req)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("GET: %w", redactURLError(err))
	}
	s := &stream{body: resp.Body, cancel: cancel, window: length}
	fail := func(err error) (*stream, error) {
		s.close()
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && ranged:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fail(fmt.Errorf("%w: %w", ErrBadContentRange, err))
		}
		if cr.Total >= 0 && cr.Total != f.cfg.size {
			return fail(fmt.Errorf("%w: Content-Range %d-%d/%d, expected size %d",
				ErrSizeMismatch, cr.Start, cr.End, cr.Total, f.cfg.size))
		}
		if cr.Start != off || cr.End > off+length-1 {
			return fail(fmt.Errorf("%w: asked %d-%d, got %d-%d",
				ErrBadContentRange, off, off+length-1, cr.Start, cr.End))
		}
		if resp.ContentLength >= 0 && resp.ContentLength != cr.End-cr.Start+1 {
			return fail(fmt.Errorf("%w: Content-Length %d for %d-%d",
				ErrBadContentRange, resp.ContentLength, cr.Start, cr.End))
		}
		s.next, s.end = off, cr.End+1
		return s, nil
	case resp.StatusCode == http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != f.cfg.size {
			return fail(fmt.Errorf("%w: Content-Length %d, expected %d",
				ErrSizeMismatch, resp.ContentLength, f.cfg.size))
		}
		if ranged && !f.noRange.Swap(true) {
			f.cfg.log.Info("glance: server ignores Range (200); reading through one sequential stream",
				"src", f.cfg.name)
		}
		s.seq, s.next, s.end = true, 0, f.cfg.size
		return s, nil
	case resp.StatusCode == http.StatusBadRequest && ranged:
		if !f.noRange.Swap(true) {
			f.cfg.log.Info("glance: store refuses ranges (400); reading through one sequential stream",
				"src", f.cfg.name)
		}
		return fail(ErrRangeUnsupported)
	case resp.StatusCode == http.StatusUnauthorized:
		s.close()
		why := f.cfg.auth.rejected(ctx, tok)
		if errors.Is(why, errRenewed) {
			return nil, why
		}
		return nil, &HTTPError{Op: "GET", Status: resp.StatusCode, Err: why}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fail(&HTTPError{Op: "GET " + req.Header.Get("Range"), Status: resp.StatusCode, Err: ErrSizeMismatch})
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		op := "GET"
		if ranged {
			op += " " + req.Header.Get("Range")
		}
		return fail(&HTTPError{Op: op, Status: resp.StatusCode, Body: bodySnippet(msg)})
	}
}

// consume copies from s into p at off (discarding any gap first), then
// parks s if it has more to give. ctx cuts the body if it fires meanwhile.
func (f *fetcher) consume(ctx context.Context, s *stream, p []byte, off int64) (int, error) {
	stop := context.AfterFunc(ctx, func() { s.cancel(ctx.Err()) })
	if gap := off - s.next; gap > 0 {
		k, err := io.CopyN(io.Discard, s.body, gap)
		s.next += k
		if err != nil {
			stop()
			s.close()
			return 0, f.bodyError(ctx, s, err)
		}
	}
	want := p[:min(int64(len(p)), s.end-off)]
	n, err := io.ReadFull(s.body, want)
	s.next += int64(n)
	cut := !stop() // ctx fired: the request is cancelled
	if err != nil {
		s.close()
		return n, f.bodyError(ctx, s, err)
	}
	switch {
	case cut:
		s.close()
	case s.next >= s.end:
		// Content-Length bodies report EOF with their last bytes, so
		// closing now returns the connection to the pool.
		s.close()
		if !s.seq {
			f.finished(s.end, s.window)
		}
	default:
		f.park(s)
	}
	return n, nil
}

func (f *fetcher) bodyError(ctx context.Context, s *stream, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: body ended at %d, expected %d", ErrTruncated, s.next, s.end)
	}
	return fmt.Errorf("reading body at %d: %w", s.next, err)
}

// addHeaders adds extra to h under canonical keys, so that later Set and
// Del calls (Range, X-Auth-Token on redirects) see them.
func addHeaders(h, extra http.Header) {
	for k, vs := range extra {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

// redactURLError drops the URL from a transport error: it may carry a
// signed query, and the caller's message names the source already.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
