// Package glance is a client of the OpenStack Glance v2 image API built on
// gophercloud/v2: authentication (none, fixed token, Keystone v3 password with
// re-authentication), paged listing, image records, ranged reads exposed as a
// block source, create, streamed upload and delete. It also has a generic
// HTTP(S) source for repositories that are not Glance.
//
// # Reading
//
// A Glance request costs about 10 ms while one open response streams at
// GB/s, so a Source keeps a few response bodies open between ReadAt calls,
// keyed by the offset they will deliver next. A read that continues where a
// body stands costs a memcpy; a read elsewhere opens a ranged GET whose
// window grows fourfold while the reader stays sequential, so a sequential
// reader soon reads one stream to the end of the image. Stores that cannot serve
// ranges (400 to a ranged GET, or 200 with the whole body) are read through
// one sequential stream from offset 0.
//
// # Errors
//
// Every wait is bounded (response headers: RequestTimeout; a stalled body:
// IdleTimeout). Transient failures (connection errors, 5xx, stalls,
// truncated bodies, wrong Content-Range) are retried with exponential
// back-off, resuming at the last good byte. HTTP statuses come back as
// *HTTPError, whose NotFound and Timeout methods let other packages test
// errors without importing this one.
package glance

import (
	"encoding/json"
	"time"
)

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

// Config configures a Client. Zero values take defaults in New.
type Config struct {
	// URL is the Glance endpoint, e.g. http://127.0.0.1:9292. With keystone
	// auth it may be empty: the public image endpoint of the catalog is used.
	URL      string
	Auth     Auth
	CAFile   string
	Insecure bool

	RequestTimeout time.Duration // wait for response headers (default 10s)
	IdleTimeout    time.Duration // longest stall inside a body (default 10s)
	Retries        int           // attempts per range after the first (default 3; -1 = none)
	Backoff        time.Duration // first back-off, doubled each retry (default 250ms)

	MaxBackoff     time.Duration // back-off cap (default 8s)
	MaxIdleStreams int           // open bodies kept per source between reads (default 4)
	StreamIdleTime time.Duration // an unused open body is closed after this (default 30s)
	MinRangeSize   int64         // smallest ranged GET (default 4 MiB)
	PageSize       int           // images per list request (default 100)
	// UploadFinishTimeout bounds the wait for Glance's answer once the
	// last byte of an upload is sent (default 5m: the store may flush).
	UploadFinishTimeout time.Duration
	// UploadIdleTimeout is the longest an upload waits for Glance to take
	// more of the body (default 60s, not IdleTimeout: a body cannot be
	// sent twice, so riding out a pause of Glance is worth the wait).
	UploadIdleTimeout time.Duration
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
	// Raw is the record as Glance sent it (re-encoded by the JSON decoder:
	// same fields and values, keys possibly reordered).
	Raw json.RawMessage `json:"-"`
}

// CreateOpts describes a new image.
type CreateOpts struct {
	Name            string
	DiskFormat      string
	ContainerFormat string
}
