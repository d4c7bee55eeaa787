package hostd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client is the thin client of the daemon's local API.
type Client struct {
	// Socket is the daemon's unix socket.
	Socket string
	// Transport carries the requests. NewClient sets one that dials Socket;
	// tests may swap in another (e.g. an in-memory handler).
	Transport http.RoundTripper
	// Timeout bounds one call (default 2m: listing a slow Glance or
	// mounting may take a while).
	Timeout time.Duration
}

// NewClient returns a client of the daemon at socketPath.
func NewClient(socketPath string) *Client {
	c := &Client{Socket: socketPath, Timeout: 2 * time.Minute}
	c.Transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			conn, err := d.DialContext(dctx, "unix", c.Socket)
			if err != nil {
				return nil, fmt.Errorf("%w at %s: %w", ErrDaemonUnreachable, c.Socket, err)
			}
			return conn, nil
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return c
}

// do sends a request with in as JSON body (if not nil) and decodes the answer
// into out (if not nil). An error answer becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored by the unix dialer.
	req, err := http.NewRequestWithContext(ctx, method, "http://glancegw"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: c.Transport}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the made-up URL from the message
		}
		if errors.Is(err, ErrDaemonUnreachable) {
			return err
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Code == "" {
			eb = errorBody{Code: CodeInternal, Error: fmt.Sprintf("%s %s: %s: %s",
				method, path, resp.Status, strings.TrimSpace(string(b)))}
		}
		return &APIError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func domainPath(d string) string { return "/v1/domains/" + url.PathEscape(d) }

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Domains lists the domains.
func (c *Client) Domains(ctx context.Context) ([]Domain, error) {
	var ds []Domain
	return ds, c.do(ctx, http.MethodGet, "/v1/domains", nil, &ds)
}

// Domain returns domain d (a name or sdUUID).
func (c *Client) Domain(ctx context.Context, d string) (Domain, error) {
	var out Domain
	return out, c.do(ctx, http.MethodGet, domainPath(d), nil, &out)
}

// AddDomain adds a domain.
func (c *Client) AddDomain(ctx context.Context, spec DomainSpec) (Domain, error) {
	var out Domain
	return out, c.do(ctx, http.MethodPost, "/v1/domains", spec, &out)
}

// EditDomain changes domain d.
func (c *Client) EditDomain(ctx context.Context, d string, p DomainPatch) (Domain, error) {
	var out Domain
	return out, c.do(ctx, http.MethodPatch, domainPath(d), p, &out)
}

// RemoveDomain unmounts and removes domain d.
func (c *Client) RemoveDomain(ctx context.Context, d string) error {
	return c.do(ctx, http.MethodDelete, domainPath(d), nil, nil)
}

// Images lists the images of domain d; refresh asks Glance again.
func (c *Client) Images(ctx context.Context, d string, refresh bool) ([]Image, error) {
	p := domainPath(d) + "/images"
	if refresh {
		p += "?refresh=1"
	}
	var out []Image
	return out, c.do(ctx, http.MethodGet, p, nil, &out)
}

// Mount mounts domain d at mountpoint (empty: the default). The answer's
// Warning says why the mounted domain could not be listed, if it could not.
func (c *Client) Mount(ctx context.Context, d, mountpoint string) (MountAnswer, error) {
	var out MountAnswer
	return out, c.do(ctx, http.MethodPost, domainPath(d)+"/mount", MountRequest{Mountpoint: mountpoint}, &out)
}

// Unmount unmounts domain d.
func (c *Client) Unmount(ctx context.Context, d string) (Domain, error) {
	var out Domain
	return out, c.do(ctx, http.MethodDelete, domainPath(d)+"/mount", nil, &out)
}

// Exports lists the NBD exports.
func (c *Client) Exports(ctx context.Context) ([]Export, error) {
	var out []Export
	return out, c.do(ctx, http.MethodGet, "/v1/nbd/exports", nil, &out)
}

// Import starts an import job (importImage).
func (c *Client) Import(ctx context.Context, req ImportRequest) (Job, error) {
	var out JobAnswer
	return out.Job, c.do(ctx, http.MethodPost, "/v1/importImage", req, &out)
}

// Export starts an export job (exportImage).
func (c *Client) Export(ctx context.Context, req ExportRequest) (Job, error) {
	var out JobAnswer
	return out.Job, c.do(ctx, http.MethodPost, "/v1/exportImage", req, &out)
}

// Jobs lists the jobs, oldest first.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var out []Job
	return out, c.do(ctx, http.MethodGet, "/v1/jobs", nil, &out)
}

func jobPath(id string) string { return "/v1/jobs/" + url.PathEscape(id) }

// Job returns job id.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	var out Job
	return out, c.do(ctx, http.MethodGet, jobPath(id), nil, &out)
}

// CancelJob cancels job id; the answer comes once it stopped (or after 10s).
func (c *Client) CancelJob(ctx context.Context, id string) (Job, error) {
	var out Job
	return out, c.do(ctx, http.MethodPost, jobPath(id)+"/cancel", nil, &out)
}

// WaitJob returns job id once it is done or after timeout (the daemon caps
// it at one minute); callers loop until Job.Done.
func (c *Client) WaitJob(ctx context.Context, id string, timeout time.Duration) (Job, error) {
	var out Job
	return out, c.do(ctx, http.MethodGet, jobPath(id)+"/wait?timeout="+url.QueryEscape(timeout.String()), nil, &out)
}
