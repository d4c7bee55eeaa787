package glance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Client talks to one Glance endpoint. It is safe for concurrent use.
type Client struct {
	base         string // endpoint without a trailing slash, e.g. http://h:9292
	hc           *http.Client
	uploadHC     *http.Client // no response-header timeout; see uploadBody
	uploadFinish time.Duration
	sc           *gophercloud.ServiceClient
	auth         authorizer
	unauthorized error // what a 401 means for this auth type
	tune         readTuning
	pageSize     int
	uploadIdle   time.Duration
	log          *slog.Logger
}

// New checks cfg and authenticates once (for keystone), bounded by ctx.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Auth.Type == "" {
		cfg.Auth.Type = AuthNone
	}
	if cfg.Auth.UserDomain == "" {
		cfg.Auth.UserDomain = "Default"
	}
	if cfg.Auth.ProjectDomain == "" {
		cfg.Auth.ProjectDomain = "Default"
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100
	}
	tune := readTuning{
		RequestTimeout: cfg.RequestTimeout, IdleTimeout: cfg.IdleTimeout,
		Retries: cfg.Retries, Backoff: cfg.Backoff, MaxBackoff: cfg.MaxBackoff,
		MaxIdleStreams: cfg.MaxIdleStreams, StreamIdleTime: cfg.StreamIdleTime, MinRangeSize: cfg.MinRangeSize,
	}.withDefaults()

	if err := checkAuth(cfg.Auth); err != nil {
		return nil, err
	}
	base := ""
	if cfg.URL != "" || cfg.Auth.Type != AuthKeystone {
		var err error
		if base, err = endpointBase(cfg.URL); err != nil {
			return nil, err
		}
	}
	hc, err := newHTTPClient(transportConfig{
		CAFile: cfg.CAFile, Insecure: cfg.Insecure,
		RequestTimeout: tune.RequestTimeout, IdleTimeout: tune.IdleTimeout,
	})
	if err != nil {
		return nil, err
	}

	uploadHC, err := newHTTPClient(transportConfig{
		CAFile: cfg.CAFile, Insecure: cfg.Insecure,
		RequestTimeout: tune.RequestTimeout, IdleTimeout: tune.IdleTimeout, NoHeaderTimeout: true,
	})
	if err != nil {
		return nil, err
	}
	if cfg.UploadFinishTimeout <= 0 {
		cfg.UploadFinishTimeout = 5 * time.Minute
	}
	if cfg.UploadIdleTimeout <= 0 {
		cfg.UploadIdleTimeout = time.Minute
	}
	c := &Client{hc: hc, uploadHC: uploadHC, uploadFinish: cfg.UploadFinishTimeout, uploadIdle: cfg.UploadIdleTimeout,
		tune: tune, pageSize: cfg.PageSize, log: log}
	var pc *gophercloud.ProviderClient
	switch cfg.Auth.Type {
	case AuthKeystone:
		if pc, err = keystoneProvider(ctx, cfg.Auth, hc); err != nil {
			return nil, err
		}
		c.auth = keystoneAuth{pc: pc}
		c.unauthorized = ErrUnauthorized
		if base == "" {
			if base, err = catalogImageURL(pc); err != nil {
				return nil, err
			}
		}
	default:
		pc = &gophercloud.ProviderClient{HTTPClient: *hc}
		pc.UseTokenLock()
		pc.UserAgent.Prepend("glancegw")
		c.auth = noAuth{}
		c.unauthorized = ErrUnauthorized
		if cfg.Auth.Type == AuthToken {
			// Set once before the client is shared; gophercloud sends it
			// on every request and, without a ReauthFunc, never renews it.
			pc.TokenID = cfg.Auth.Token
			c.auth = fixedToken(cfg.Auth.Token)
			c.unauthorized = ErrTokenRejected
		}
	}
	c.base = base
	c.sc = &gophercloud.ServiceClient{
		ProviderClient: pc,
		Endpoint:       base + "/",
		ResourceBase:   base + "/v2/",
		Type:           "image",
	}
	log.Debug("glance client ready", "url", base, "auth", cfg.Auth.Type)
	return c, nil
}

// catalogImageURL picks the public image endpoint of the token's catalog,
// without the version discovery request gophercloud's locator would send.
func catalogImageURL(pc *gophercloud.ProviderClient) (string, error) {
	res, ok := pc.GetAuthResult().(tokens.CreateResult)
	if !ok {
		return "", errors.New("glance: no keystone catalog to find the image endpoint in; give the Glance URL")
	}
	catalog, err := res.ExtractServiceCatalog()
	if err != nil {
		return "", fmt.Errorf("glance: keystone catalog: %w", err)
	}
	u, err := openstack.V3EndpointURL(catalog, gophercloud.EndpointOpts{Type: "image", Availability: gophercloud.AvailabilityPublic})
	if err != nil {
		return "", fmt.Errorf("glance: no public image endpoint in the keystone catalog: %w", err)
	}
	return endpointBase(u)
}

func checkAuth(a Auth) error {
	switch a.Type {
	case AuthNone:
	case AuthToken:
		if a.Token == "" {
			return errors.New("glance: auth token: no token given")
		}
	case AuthKeystone:
		var missing []string
		for _, f := range []struct{ name, v string }{
			{"auth URL", a.AuthURL}, {"username", a.Username}, {"password", a.Password}, {"project", a.Project},
		} {
			if f.v == "" {
				missing = append(missing, f.name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("glance: auth keystone: missing %s", strings.Join(missing, ", "))
		}
	default:
		return fmt.Errorf("glance: unknown auth type %q (want none, token or keystone)", a.Type)
	}
	return nil
}

// endpointBase checks a Glance URL and returns it without a trailing slash
// or version suffix.
func endpointBase(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("glance: endpoint URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("glance: endpoint URL %q: want http(s)://host[:port][/path]", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("glance: endpoint URL %q: no credentials, query or fragment allowed", u.Redacted())
	}
	p := strings.TrimRight(u.Path, "/")
	p = strings.TrimSuffix(p, "/v2")
	u.Path, u.RawPath = p, ""
	return u.String(), nil
}

// checkID refuses ids that would change the URL they are put into.
func checkID(id string) error {
	if id == "" || id == "." || id == ".." {
		return fmt.Errorf("glance: bad image id %q", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("glance: bad image id %q", id)
		}
	}
	return nil
}

// List returns every image, following all pages.
func (c *Client) List(ctx context.Context) ([]Image, error) {
	var out []Image
	pages := 0
	err := images.List(c.sc, images.ListOpts{Limit: c.pageSize}).EachPage(ctx,
		func(_ context.Context, page pagination.Page) (bool, error) {
			pages++
			var body struct {
				Images []json.RawMessage `json:"images"`
			}
			if err := page.(images.ImagePage).ExtractInto(&body); err != nil {
				return false, err
			}
			for _, raw := range body.Images {
				img, err := parseImage(raw)
				if err != nil {
					return false, err
				}
				out = append(out, img)
			}
			return true, nil
		})
	if err != nil {
		return nil, fromGophercloud(fmt.Sprintf("glance: list images (page %d)", pages), err, c.unauthorized)
	}
	return out, nil
}

func parseImage(raw json.RawMessage) (Image, error) {
	var img Image
	if err := json.Unmarshal(raw, &img); err != nil {
		return Image{}, fmt.Errorf("decode image record: %w", err)
	}
	if img.ID == "" {
		return Image{}, errors.New("decode image record: no id")
	}
	img.Raw = append(json.RawMessage(nil), raw...)
	return img, nil
}

// Get returns one image record. A missing image gives an error whose
// NotFound() reports true.
func (c *Client) Get(ctx context.Context, id string) (Image, error) {
	if err := checkID(id); err != nil {
		return Image{}, err
	}
	r := images.Get(ctx, c.sc, id)
	if r.Err != nil {
		return Image{}, fromGophercloud("glance: get image "+id, r.Err, c.unauthorized)
	}
	var raw json.RawMessage
	if err := r.ExtractInto(&raw); err != nil {
		return Image{}, fmt.Errorf("glance: get image %s: %w", id, err)
	}
	img, err := parseImage(raw)
	if err != nil {
		return Image{}, fmt.Errorf("glance: get image %s: %w", id, err)
	}
	return img, nil
}

// Source returns img's bytes as a block source (ReadAt, Size, Identity).
// domain goes into the identity with the id and checksum. The size comes
// from the record: Glance answers HEAD on the file with 405.
func (c *Client) Source(domain string, img Image) *Source {
	version := img.Checksum
	if version == "" {
		version = img.OSHashValue
	}
	if version == "" {
		version = img.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	return &Source{
		id: domain + "/" + img.ID + "@" + version,
		f: newFetcher(fetcherConfig{
			hc: c.hc, url: c.FileURL(img.ID), auth: c.auth, size: img.Size,
			name: "image " + img.ID, tune: c.tune, log: c.log,
		}),
	}
}

// Create makes a new queued image.
func (c *Client) Create(ctx context.Context, opts CreateOpts) (Image, error) {
	if opts.Name == "" {
		return Image{}, errors.New("glance: create image: no name")
	}
	r := images.Create(ctx, c.sc, images.CreateOpts{
		Name: opts.Name, DiskFormat: opts.DiskFormat, ContainerFormat: opts.ContainerFormat,
	})
	op := fmt.Sprintf("glance: create image %q", opts.Name)
	if r.Err != nil {
		return Image{}, fromGophercloud(op, r.Err, c.unauthorized)
	}
	var raw json.RawMessage
	if err := r.ExtractInto(&raw); err != nil {
		return Image{}, fmt.Errorf("%s: %w", op, err)
	}
	img, err := parseImage(raw)
	if err != nil {
		return Image{}, fmt.Errorf("%s: %w", op, err)
	}
	return img, nil
}

// Delete deletes an image.
func (c *Client) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := images.Delete(ctx, c.sc, id).ExtractErr(); err != nil {
		return fromGophercloud("glance: delete image "+id, err, c.unauthorized)
	}
	return nil
}

// FileURL is the URL of id's data, as importInfo carries it.
func (c *Client) FileURL(id string) string {
	return c.base + "/v2/images/" + url.PathEscape(id) + "/file"
}
