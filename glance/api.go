// Package glance is a client of the OpenStack Glance v2 image API built on
// gophercloud/v2: authentication (none, fixed token, Keystone v3 password with
// re-authentication), paged listing, image records, ranged reads exposed as a
// block source, create, streamed upload and delete. It also has a generic
// HTTP(S) source for repositories that are not Glance.
//
// CONTRACT STUB: signatures here are the agreed API; bodies are being written.
package glance

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"time"
)

var errTODO = errors.New("glance: not implemented yet")

// Auth says how to authenticate. Type is "none", "token" or "keystone".
type Auth struct {
	Type          string
	Token         string // Type "token"
	AuthURL       string // Type "keystone": the Keystone v3 endpoint
	Username      string
	Password      string
	Project       string
	UserDomain    string // default "Default"
	ProjectDomain string // default "Default"
}

// Config configures a Client. Zero durations take defaults in New.
type Config struct {
	URL      string // Glance endpoint, e.g. http://127.0.0.1:9292
	Auth     Auth
	CAFile   string
	Insecure bool

	RequestTimeout time.Duration // wait for response headers (default 15s)
	IdleTimeout    time.Duration // longest stall inside a body (default 15s)
	Retries        int           // attempts per range after the first (default 4)
	Backoff        time.Duration // first back-off, doubled each retry (default 250ms)
}

// Image is one Glance image record.
type Image struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Status          string    `json:"status"`
	Size            int64     `json:"size"`
	VirtualSize     int64     `json:"virtual_size"`
	DiskFormat      string    `json:"disk_format"`
	ContainerFormat string    `json:"container_format"`
	Checksum        string    `json:"checksum"`
	OSHashAlgo      string    `json:"os_hash_algo"`
	OSHashValue     string    `json:"os_hash_value"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	// Raw is the record exactly as Glance sent it.
	Raw json.RawMessage `json:"-"`
}

// Client talks to one Glance endpoint. It is safe for concurrent use.
type Client struct{}

// New checks cfg and authenticates once (for keystone), bounded by ctx.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Client, error) { return nil, errTODO }

// List returns every image, following all pages.
func (c *Client) List(ctx context.Context) ([]Image, error) { return nil, errTODO }

// Get returns one image record. A missing image gives an error whose
// NotFound() reports true.
func (c *Client) Get(ctx context.Context, id string) (Image, error) { return Image{}, errTODO }

// Source returns img's bytes as a block source (ReadAt, Size, Identity).
// domain goes into the identity with the id and checksum.
func (c *Client) Source(domain string, img Image) *Source { return nil }

// CreateOpts describes a new image.
type CreateOpts struct {
	Name            string
	DiskFormat      string
	ContainerFormat string
}

// Create makes a new queued image.
func (c *Client) Create(ctx context.Context, opts CreateOpts) (Image, error) {
	return Image{}, errTODO
}

// Upload streams r as the image data. size < 0 means unknown (chunked).
func (c *Client) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	return errTODO
}

// Delete deletes an image.
func (c *Client) Delete(ctx context.Context, id string) error { return errTODO }

// FileURL is the URL of id's data, as importInfo carries it.
func (c *Client) FileURL(id string) string { return "" }

// Source is an image's bytes over ranged GETs.
type Source struct{}

func (s *Source) ReadAt(ctx context.Context, p []byte, off int64) (int, error) { return 0, errTODO }
func (s *Source) Size() int64                                                  { return 0 }
func (s *Source) Identity() string                                             { return "" }
