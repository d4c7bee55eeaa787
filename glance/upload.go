package glance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Upload streams r as the image data. size < 0 means unknown (chunked).
//
// A body cannot be sent twice, so the token is renewed before the upload
// if it would expire soon; a 401 after any byte of r was read is returned
// as ErrBodyConsumed and never retried.
func (c *Client) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	if size > 0 {
		// Send exactly size bytes, and never wait on the producer for an
		// EOF after them.
		r = io.LimitReader(r, size)
	}
	op := "glance: upload image " + id
	for attempt := 0; ; attempt++ {
		tok, err := c.auth.token(ctx, tokenMargin)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		body := newUploadBody(r)
		resp, release, err := c.putFile(ctx, id, tok, body, size)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", op, ctx.Err())
			}
			return fmt.Errorf("%s after %d bytes: %w", op, body.n.Load(), err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		// Glance may answer before it read the whole body; r is the
		// caller's again only once the transport let go of it.
		release()
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			c.log.Debug("glance upload done", "image", id, "bytes", body.n.Load())
			return nil
		case resp.StatusCode == http.StatusUnauthorized:
			why := c.auth.rejected(ctx, tok)
			if errors.Is(why, errRenewed) {
				if body.n.Load() == 0 && attempt == 0 {
					continue // nothing of r was consumed: safe to send again
				}
				why = fmt.Errorf("%w after %d bytes (a new token is ready for the next try)", ErrBodyConsumed, body.n.Load())
			}
			return &HTTPError{Op: op, Status: resp.StatusCode, Err: why}
		default:
			return &HTTPError{Op: op, Status: resp.StatusCode, Body: bodySnippet(msg)}
		}
	}
}

// putFile sends the PUT. release, to be called once the response is read,
// ends the request and returns when the transport no longer reads body
// (net/http may read it after Do returned); on error putFile releases it.
func (c *Client) putFile(ctx context.Context, id, tok string, body *uploadBody, size int64) (resp *http.Response, _ func(), err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	body.watch(c.uploadIdle, c.uploadFinish, cancel)
	release := func() {
		body.stop()
		cancel(nil) // closes a connection still writing the body
		body.waitClosed(releaseWait, c.log)
	}
	defer func() {
		if err != nil {
			release()
		}
	}()

	var rd io.Reader = body
	if size == 0 {
		rd = http.NoBody // a 0 length with a non-nil body would mean "unknown"
		body.Close()
		body.finished()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.FileURL(id), rd)
	if err != nil {
		return nil, nil, err
	}
	req.ContentLength = size
	if size < 0 {
		req.ContentLength = -1
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("User-Agent", "glancegw")
	if tok != "" {
		req.Header.Set("X-Auth-Token", tok)
	}
	resp, err = c.uploadHC.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrIdleTimeout) || errors.Is(cause, ErrNoAnswer) {
			return nil, nil, cause
		}
		return nil, nil, err
	}
	return resp, release, nil
}

// releaseWait bounds the wait for the transport to close an upload body
// after its request ended: a Read blocked in the producer is its to end.
const releaseWait = 30 * time.Second

// uploadBody counts what the transport took from r and bounds every wait
// of an upload: between the transport's reads a timer runs, so a server
// that stops taking bytes for the idle time cancels the upload (time spent
// inside r.Read is the producer's and not counted); after the last byte,
// the wait for Glance's answer is bounded by finish.
type uploadBody struct {
	r      io.Reader
	n      atomic.Int64
	idle   time.Duration
	finish time.Duration
	cause  atomic.Value // error the timer cancels with
	timer  *time.Timer

	closeOnce sync.Once
	closed    chan struct{} // the transport closed the body: no Read follows
}

func newUploadBody(r io.Reader) *uploadBody {
	return &uploadBody{r: r, closed: make(chan struct{})}
}

// Close is called by the transport when it is done with the body, on
// success and on error.
func (b *uploadBody) Close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	return nil
}

// waitClosed waits up to bound for Close.
func (b *uploadBody) waitClosed(bound time.Duration, log *slog.Logger) {
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-b.closed:
	case <-t.C:
		log.Warn("glance upload: the HTTP transport still holds the request body", "after", bound)
	}
}

// watch arms nothing yet: until the first Read returns, dialing and the
// TLS handshake are bounded by the transport.
func (b *uploadBody) watch(idle, finish time.Duration, cancel context.CancelCauseFunc) {
	b.idle, b.finish = idle, finish
	b.cause.Store(ErrIdleTimeout)
	b.timer = time.AfterFunc(time.Hour, func() { cancel(b.cause.Load().(error)) })
	b.timer.Stop()
}

func (b *uploadBody) stop() { b.timer.Stop() }

// finished switches the timer to the wait for the answer.
func (b *uploadBody) finished() {
	b.cause.Store(ErrNoAnswer)
	b.timer.Reset(b.finish)
}

func (b *uploadBody) Read(p []byte) (int, error) {
	b.timer.Stop()
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	switch {
	case err == nil:
		b.timer.Reset(b.idle)
	case errors.Is(err, io.EOF):
		b.finished()
	}
	return n, err
}
