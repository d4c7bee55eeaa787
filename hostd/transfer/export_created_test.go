package transfer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/glancegw/glancegw/cache/cachetest"
)

// TestExportCreatedHook checks that Created sees the new image before any
// byte is uploaded, and that its error deletes the image and fails the
// export without an upload.
func TestExportCreatedHook(t *testing.T) {
	data := cachetest.Data(2<<20+3, 2)
	for _, tc := range []struct {
		name    string
		hookErr error
	}{{"recorded", nil}, {"not recorded", errors.New("disk full")}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGlance()
			var seen []string
			var sentBefore int64 = -1
			var sent int64
			res, err := testEngine(t).Export(context.Background(), ExportSpec{
				Source: cachetest.NewMemSource(data), What: "vol", Glance: g, Name: "x",
				Progress: func(n int64) { sent += n },
				Created: func(id string) error {
					seen = append(seen, id)
					sentBefore = sent
					g.mu.Lock()
					defer g.mu.Unlock()
					if im, ok := g.images[id]; !ok || im.Status != "queued" {
						t.Errorf("Created(%s): glance holds %+v", id, im)
					}
					return tc.hookErr
				},
			})
			if len(seen) != 1 || seen[0] != res.ImageID || sentBefore != 0 {
				t.Fatalf("Created called with %v (image %q) after %d bytes", seen, res.ImageID, sentBefore)
			}
			if tc.hookErr == nil {
				if err != nil || !res.Verified || sent != int64(len(data)) {
					t.Fatalf("export: %+v %v", res, err)
				}
				return
			}
			if !errors.Is(err, tc.hookErr) || !strings.Contains(err.Error(), "record the new image") {
				t.Fatalf("err = %v, want the hook's error", err)
			}
			if sent != 0 || len(g.data) != 0 {
				t.Errorf("%d bytes were sent to an image that was not recorded", sent)
			}
			if len(g.images) != 0 || len(g.deleted) != 1 || g.deleted[0] != seen[0] {
				t.Errorf("image not deleted: images %v deleted %v", g.images, g.deleted)
			}
		})
	}
}
