package glance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// transportConfig is what every HTTP client of this package needs.
type transportConfig struct {
	CAFile         string
	Insecure       bool
	RequestTimeout time.Duration // dial, TLS handshake and response headers
	IdleTimeout    time.Duration // longest stall inside a body
	// NoHeaderTimeout leaves the wait for response headers to the caller
	// (uploads: Glance answers only after storing the last byte).
	NoHeaderTimeout bool
}

// newHTTPClient builds a client whose every wait is bounded: dialing, TLS,
// response headers (RequestTimeout) and each read of a body (IdleTimeout).
// Bodies need no overall deadline, so a long stream is fine as long as it
// keeps moving.
func newHTTPClient(cfg transportConfig) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.Insecure {
		tlsCfg.InsecureSkipVerify = true
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("glance: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("glance: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: cfg.RequestTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   cfg.RequestTimeout,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16, // parallel ranged reads would churn connections at the default 2
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
		// Image bytes are usually incompressible; gzip would also hide
		// Content-Length and Content-Range.
		DisableCompression: true,
	}
	if cfg.NoHeaderTimeout {
		tr.ResponseHeaderTimeout = 0
	}
	return &http.Client{
		Transport:     &watchdog{base: tr, idle: cfg.IdleTimeout},
		CheckRedirect: keepTokenHome,
	}, nil
}

// keepTokenHome drops X-Auth-Token when a redirect leaves the origin the
// token was sent to (net/http only strips Authorization and cookies).
func keepTokenHome(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		req.Header.Del("X-Auth-Token")
	}
	return nil
}

// watchdog gives every response body an idle timeout: a Read that gets no
// byte for idle cancels the request, and the Read fails with ErrIdleTimeout
// instead of hanging.
type watchdog struct {
	base http.RoundTripper
	idle time.Duration
}

func (w *watchdog) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := w.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if errors.Is(context.Cause(ctx), ErrIdleTimeout) {
			err = fmt.Errorf("%w: %w", ErrIdleTimeout, err)
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = newIdleBody(ctx, resp.Body, w.idle, cancel)
	return resp, nil
}

// idleBody arms a timer around each Read; the timer only runs while a
// Read is waiting, so a body parked between calls never times out.
type idleBody struct {
	ctx    context.Context
	rc     io.ReadCloser
	cancel context.CancelCauseFunc
	idle   time.Duration
	timer  *time.Timer
	once   sync.Once
}

func newIdleBody(ctx context.Context, rc io.ReadCloser, idle time.Duration, cancel context.CancelCauseFunc) *idleBody {
	b := &idleBody{ctx: ctx, rc: rc, cancel: cancel, idle: idle}
	b.timer = time.AfterFunc(time.Hour, func() { cancel(ErrIdleTimeout) })
	b.timer.Stop()
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF {
		// Report why the request was cut (stall, caller gone), not the
		// transport's generic "context canceled".
		if cause := context.Cause(b.ctx); cause != nil {
			return n, cause
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.once.Do(func() { b.cancel(context.Canceled) })
	return err
}
