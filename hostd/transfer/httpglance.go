package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/glancegw/glancegw/glance"
)

// fileURLRE matches the path of a Glance image's data: .../v2/images/<id>/file.
var fileURLRE = regexp.MustCompile(`^(.*)/v2/images/([^/]+)/file$`)

// GlanceFileURL splits a Glance image file URL into the endpoint and the
// image id; ok is false for other URLs.
func GlanceFileURL(u *url.URL) (endpoint *url.URL, id string, ok bool) {
	m := fileURLRE.FindStringSubmatch(u.EscapedPath())
	if m == nil {
		return nil, "", false
	}
	id, err := url.PathUnescape(m[2])
	if err != nil || id == "" {
		return nil, "", false
	}
	ep := *u
	ep.RawPath, ep.RawQuery, ep.Fragment, ep.User = "", "", "", nil
	ep.Path, _ = url.PathUnescape(m[1])
	return &ep, id, true
}

// errStalled cancels an upload whose body nobody reads.
var errStalled = errors.New("upload stalled: the server took no byte for the idle timeout")

func (e *Engine) httpClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: e.cfg.HTTPTimeout,
			MaxIdleConns:          2,
			IdleConnTimeout:       30 * time.Second,
		},
		// A redirect would resend the credentials elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// countingReader records when its reader last took bytes.
type countingReader struct {
	r    io.Reader
	last atomic.Int64 // unix nanos of the last Read
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.last.Store(time.Now().UnixNano())
	return c.r.Read(p)
}

// put sends body to url with header and Content-Length size. A server that
// stops reading for IdleTimeout gets the request cancelled.
func (e *Engine) put(ctx context.Context, rawURL string, header http.Header, body io.Reader, size int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cr := &countingReader{r: body}
	cr.last.Store(time.Now().UnixNano())
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(e.cfg.IdleTimeout / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if time.Since(time.Unix(0, cr.last.Load())) > e.cfg.IdleTimeout {
					cancel(errStalled)
					return
				}
			}
		}
	}()
	var rd io.Reader = cr
	if size == 0 {
		rd = http.NoBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rawURL, rd)
	if err != nil {
		return fmt.Errorf("put %s: %w", RedactURL(rawURL), err)
	}
	req.ContentLength = size
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("User-Agent", "glancegw")
	resp, err := e.httpClient().Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil {
			err = c
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its URL may carry secrets
		}
		return fmt.Errorf("put %s: %w", RedactURL(rawURL), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return &glance.HTTPError{Op: "put " + RedactURL(rawURL), Status: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
	}
	return nil
}

// record fetches the Glance image record behind an image file URL with the
// same headers; found is false when the URL is not a Glance file URL.
func (e *Engine) record(ctx context.Context, fileURL string, header http.Header) (img glance.Image, found bool, err error) {
	return fetchRecord(ctx, e.httpClient(), fileURL, header)
}

// GlanceRecord is like the Glance record lookup export uses, for callers
// holding only an importInfo (url + headers): it reads
// <endpoint>/v2/images/<id> when fileURL is a Glance image file URL.
// found is false for other URLs and when the answer is not an image record
// (the URL merely looked like Glance).
func (e *Engine) GlanceRecord(ctx context.Context, fileURL string, header http.Header) (glance.Image, bool, error) {
	return fetchRecord(ctx, e.httpClient(), fileURL, header)
}

func fetchRecord(ctx context.Context, hc *http.Client, fileURL string, header http.Header) (glance.Image, bool, error) {
	u, err := url.Parse(fileURL)
	if err != nil {
		return glance.Image{}, false, nil
	}
	ep, id, ok := GlanceFileURL(u)
	if !ok {
		return glance.Image{}, false, nil
	}
	recURL := strings.TrimRight(ep.String(), "/") + "/v2/images/" + url.PathEscape(id)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, recURL, nil)
	if err != nil {
		return glance.Image{}, false, nil
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return glance.Image{}, false, fmt.Errorf("get %s: %w", RedactURL(recURL), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusUnauthorized {
			return glance.Image{}, false, &glance.HTTPError{Op: "get " + RedactURL(recURL), Status: resp.StatusCode}
		}
		return glance.Image{}, false, nil
	}
	var img glance.Image
	if err := json.Unmarshal(b, &img); err != nil || img.ID != id || img.Status == "" {
		return glance.Image{}, false, nil
	}
	return img, true, nil
}
