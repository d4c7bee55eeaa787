package hostd

import (
	"context"
	"io"
	"log/slog"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance"
)

// backend is what a domain needs from its Glance. *glance.Client has it (via
// glanceBackend); tests use an in-memory fake.
type backend interface {
	List(ctx context.Context) ([]glance.Image, error)
	Get(ctx context.Context, id string) (glance.Image, error)
	Source(domain string, img glance.Image) cache.BlockSource
}

type glanceBackend struct{ c *glance.Client }

func connectGlance(ctx context.Context, cfg glance.Config, log *slog.Logger) (backend, error) {
	c, err := glance.New(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	return glanceBackend{c}, nil
}

func (g glanceBackend) List(ctx context.Context) ([]glance.Image, error) { return g.c.List(ctx) }

func (g glanceBackend) Get(ctx context.Context, id string) (glance.Image, error) {
	return g.c.Get(ctx, id)
}

func (g glanceBackend) Source(domain string, img glance.Image) cache.BlockSource {
	return g.c.Source(domain, img)
}

// The methods export needs (transfer.Glance).

func (g glanceBackend) Create(ctx context.Context, opts glance.CreateOpts) (glance.Image, error) {
	return g.c.Create(ctx, opts)
}

func (g glanceBackend) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	return g.c.Upload(ctx, id, r, size)
}

func (g glanceBackend) Delete(ctx context.Context, id string) error { return g.c.Delete(ctx, id) }
