package glance

import "context"

// Source is an image's bytes over ranged GETs. It implements the block
// source contract of package cache: ReadAt is safe for concurrent use,
// returns n < len(p) only with an error (io.EOF at the end), and does not
// keep p. Concurrent reads at different offsets use separate requests.
type Source struct {
	id string
	f  *fetcher
}

// ReadAt reads len(p) bytes at off. ctx bounds this call only: an open
// body it leaves parked for the next call is not tied to it.
func (s *Source) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return s.f.readAt(ctx, p, off)
}

// Size is the image size from its record.
func (s *Source) Size() int64 { return s.f.cfg.size }

// Identity is domain/id@checksum (or os_hash_value, or updated_at when the
// image has no checksum yet).
func (s *Source) Identity() string { return s.id }

// RangesSupported reports false once the store was found unable to serve
// byte ranges; reads then go through one sequential stream.
func (s *Source) RangesSupported() bool { return !s.f.noRange.Load() }

// Close drops the bodies kept open between reads. Reads after Close fail
// with ErrClosed. Unclosed sources release their bodies after
// StreamIdleTime anyway.
func (s *Source) Close() error {
	s.f.close()
	return nil
}
