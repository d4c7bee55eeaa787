// Package fs serves one Glance storage domain as a read-only FUSE tree laid
// out like an oVirt ISO domain. See docs/DESIGN.md, "Mounted domain".
package fs

import (
	"context"
	"encoding/json"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// Image is what the tree shows of one Glance image.
type Image struct {
	ID              string
	Name            string
	Status          string
	Size            int64
	VirtualSize     int64 // 0 when unknown
	DiskFormat      string
	ContainerFormat string
	Checksum        string
	OSHashAlgo      string
	OSHashValue     string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	// Meta is the JSON document served as meta/<id>.json (Glance metadata
	// plus what glancegw detected, such as format and virtual size).
	Meta json.RawMessage
}

// DomainInfo describes the domain for dom_md/metadata.
type DomainInfo struct {
	UUID        string
	Name        string
	URL         string
	Description string
}

// Domain is what the tree needs from a storage domain.
type Domain interface {
	Info() DomainInfo
	// Images returns the domain's images. With refresh false it may answer
	// from a listing cached by the implementation; with refresh true it asks
	// Glance again (the implementation may rate-limit that).
	Images(ctx context.Context, refresh bool) ([]Image, error)
	// Open returns the bytes of img, normally through the shared cache.
	Open(ctx context.Context, img Image) (cache.BlockSource, error)
}
