package glance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// HTTPSourceConfig configures a source over a plain HTTP(S) URL, such as
// the url + headers of an importInfo. Zero values take defaults.
type HTTPSourceConfig struct {
	URL    string
	Header http.Header // sent with every request, e.g. X-Auth-Token; never logged
	Size   int64       // 0 = discover with a Range: bytes=0-0 GET, then HEAD

	CAFile   string
	Insecure bool

	RequestTimeout time.Duration // wait for response headers (default 10s)
	IdleTimeout    time.Duration // longest stall inside a body (default 10s)
	Retries        int           // attempts per range after the first (default 3; -1 = none)
	Backoff        time.Duration // first back-off, doubled each retry (default 250ms)
	MaxBackoff     time.Duration // back-off cap (default 8s)
	MaxIdleStreams int           // open bodies kept between reads (default 4)
	StreamIdleTime time.Duration // an unused open body is closed after this (default 30s)
	MinRangeSize   int64         // smallest ranged GET (default 4 MiB)
}

// HTTPSource is the bytes behind an HTTP(S) URL, read like a Glance Source
// (same ranged streams, fallback, retries). It is safe for concurrent use.
type HTTPSource struct {
	id string
	f  *fetcher
}

// NewHTTPSource checks the URL and learns the size (unless given), bounded
// by ctx and the timeouts.
func NewHTTPSource(ctx context.Context, cfg HTTPSourceConfig, log *slog.Logger) (*HTTPSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("glance: http source URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("glance: http source URL %s: only http and https URLs are accepted", redactURL(u))
	}
	if cfg.Size < 0 {
		return nil, fmt.Errorf("glance: http source %s: negative size %d", redactURL(u), cfg.Size)
	}
	tune := readTuning{
		RequestTimeout: cfg.RequestTimeout, IdleTimeout: cfg.IdleTimeout,
		Retries: cfg.Retries, Backoff: cfg.Backoff, MaxBackoff: cfg.MaxBackoff,
		MaxIdleStreams: cfg.MaxIdleStreams, StreamIdleTime: cfg.StreamIdleTime, MinRangeSize: cfg.MinRangeSize,
	}.withDefaults()
	hc, err := newHTTPClient(transportConfig{
		CAFile: cfg.CAFile, Insecure: cfg.Insecure,
		RequestTimeout: tune.RequestTimeout, IdleTimeout: tune.IdleTimeout,
	})
	if err != nil {
		return nil, err
	}
	fc := fetcherConfig{
		hc: hc, url: u.String(), header: cfg.Header.Clone(), auth: noAuth{},
		size: cfg.Size, name: redactURL(u), tune: tune, log: log,
	}
	var validator string
	if cfg.Size == 0 {
		var d discovery
		if err := retryDiscover(ctx, tune, log, fc.name, func() (err error) {
			d, err = discoverSize(ctx, fc)
			return err
		}); err != nil {
			return nil, fmt.Errorf("glance: http source %s: size: %w", fc.name, err)
		}
		fc.size, fc.noRange, validator = d.size, d.noRange, d.validator
		log.Debug("http source size discovered", "src", fc.name, "size", d.size, "ranges", !d.noRange)
	}
	sum := sha256.Sum256([]byte(u.String() + "\x00" + strconv.FormatInt(fc.size, 10) + "\x00" + validator))
	return &HTTPSource{
		// The query may carry a signature, so the identity shows only a hash of it.
		id: "url:" + fc.name + "#" + hex.EncodeToString(sum[:8]),
		f:  newFetcher(fc),
	}, nil
}

// ReadAt reads len(p) bytes at off (see Source.ReadAt).
func (s *HTTPSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return s.f.readAt(ctx, p, off)
}

// Size is the size given or discovered.
func (s *HTTPSource) Size() int64 { return s.f.cfg.size }

// Identity names the URL, its size and validator (ETag or Last-Modified)
// as seen when the source was made.
func (s *HTTPSource) Identity() string { return s.id }

// RangesSupported reports false once the server was found unable to serve
// byte ranges.
func (s *HTTPSource) RangesSupported() bool { return !s.f.noRange.Load() }

// Close drops the bodies kept open between reads.
func (s *HTTPSource) Close() error {
	s.f.close()
	return nil
}

// redactURL is a URL safe to log: no user info, no query.
func redactURL(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

type discovery struct {
	size      int64
	noRange   bool
	validator string
}

// discoverSize asks for the first byte: a 206 gives the total in
// Content-Range, a 200 gives Content-Length (and shows ranges are
// ignored), a 416 on an empty file gives "bytes */0". HEAD is the fallback.
func discoverSize(ctx context.Context, fc fetcherConfig) (discovery, error) {
	do := func(method string, ranged bool) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, fc.url, nil)
		if err != nil {
			return nil, err
		}
		addHeaders(req.Header, fc.header)
		req.Header.Set("User-Agent", "glancegw")
		if ranged {
			req.Header.Set("Range", "bytes=0-0")
		}
		resp, err := fc.hc.Do(req)
		return resp, redactURLError(err)
	}
	validator := func(h http.Header) string { return h.Get("ETag") + "|" + h.Get("Last-Modified") }

	resp, err := do(http.MethodGet, true)
	if err != nil {
		return discovery{}, fmt.Errorf("GET bytes=0-0: %w", err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close() // a 200 body is cut here: it was only asked for headers
	switch resp.StatusCode {
	case http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && cr.Total >= 0 {
			return discovery{size: cr.Total, validator: validator(resp.Header)}, nil
		}
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			return discovery{size: resp.ContentLength, noRange: true, validator: validator(resp.Header)}, nil
		}
	case http.StatusBadRequest:
		// A store that refuses ranges; HEAD may still know the length.
	default:
		return discovery{}, &HTTPError{Op: "GET bytes=0-0", Status: resp.StatusCode, Body: bodySnippet(msg)}
	}

	head, err := do(http.MethodHead, false)
	if err != nil {
		return discovery{}, fmt.Errorf("HEAD: %w", err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK {
		return discovery{}, &HTTPError{Op: "HEAD", Status: head.StatusCode}
	}
	if head.ContentLength < 0 {
		return discovery{}, ErrUnknownSize
	}
	return discovery{
		size:      head.ContentLength,
		noRange:   resp.StatusCode == http.StatusBadRequest,
		validator: validator(head.Header),
	}, nil
}

// retryDiscover runs fn with the read path's retry policy.
func retryDiscover(ctx context.Context, tune readTuning, log *slog.Logger, name string, fn func() error) error {
	backoff := tune.Backoff
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) || attempt >= tune.Retries {
			return err
		}
		log.Warn("http source: size discovery failed, retrying", "src", name, "attempt", attempt+1, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, tune.MaxBackoff)
	}
}
