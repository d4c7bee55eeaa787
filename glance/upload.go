package glance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	op := "glance: upload image " + id
	for attempt := 0; ; attempt++ {
		tok, err := c.auth.token(ctx, tokenMargin)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		body := &uploadBody{r: r}
		resp, err := c.putFile(ctx, id, tok, body, size)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", op, ctx.Err())
			}
			return fmt.Errorf("%s after %d bytes: %w", op, body.n.Load(), err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
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

func (c *Client) putFile(ctx context.Context, id, tok string, body *uploadBody, size int64) (*http.Response, error) {
	// Cancel the request when the server stops taking bytes: the transport
	// only bounds the wait for response headers once the body is sent.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	body.watch(c.idleTimeout, cancel)
	defer body.stop()

	var rd io.Reader = body
	if size == 0 {
		rd = http.NoBody // a 0 length with a non-nil body would mean "unknown"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.FileURL(id), rd)
	if err != nil {
		return nil, err
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
	resp, err := c.hc.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrIdleTimeout) {
			return nil, fmt.Errorf("server took no bytes: %w", cause)
		}
		return nil, err
	}
	return resp, nil
}

// uploadBody counts what the transport took from r, and runs a timer
// between the transport's reads: if it stops asking for bytes (the server
// stopped reading) for the idle time, the upload is cancelled. The time
// spent inside r.Read is the producer's, not the server's, and not counted.
type uploadBody struct {
	r     io.Reader
	n     atomic.Int64
	idle  time.Duration
	timer *time.Timer
}

// watch arms nothing yet: until the first Read returns, dialing and the
// TLS handshake are bounded by the transport.
func (b *uploadBody) watch(idle time.Duration, cancel context.CancelCauseFunc) {
	b.idle = idle
	b.timer = time.AfterFunc(time.Hour, func() { cancel(ErrIdleTimeout) })
	b.timer.Stop()
}

func (b *uploadBody) stop() { b.timer.Stop() }

func (b *uploadBody) Read(p []byte) (int, error) {
	b.timer.Stop()
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	if err == nil {
		b.timer.Reset(b.idle)
	}
	return n, err
}
