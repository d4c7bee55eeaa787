package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// eventually polls f until it returns nil or timeout passes; it returns the
// last error and how long it took.
func eventually(timeout, every time.Duration, f func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := f()
		if err == nil || time.Since(start) > timeout {
			return time.Since(start), err
		}
		time.Sleep(every)
	}
}

// readResult is one bounded pread.
type readResult struct {
	N       int
	Err     error
	Elapsed time.Duration
	Hung    bool // still blocked when the bound passed
}

// preadWithin reads len(p) bytes at off from f, giving up waiting after
// bound (the read itself may go on in the background: a hung FUSE read
// cannot be cancelled from here; the cleanup's unmount ends it).
func preadWithin(f *os.File, p []byte, off int64, bound time.Duration) readResult {
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	buf := make([]byte, len(p))
	start := time.Now()
	go func() {
		n, err := f.ReadAt(buf, off)
		ch <- res{n, err}
	}()
	select {
	case r := <-ch:
		copy(p, buf[:r.n])
		return readResult{N: r.n, Err: r.err, Elapsed: time.Since(start)}
	case <-time.After(bound):
		return readResult{Elapsed: time.Since(start), Hung: true}
	}
}

// checkRandomPreads reads n random ranges of path and compares them with
// want.
func checkRandomPreads(t *testing.T, path string, want []byte, n int, seed uint64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	if len(want) == 0 {
		if k, err := f.ReadAt(make([]byte, 10), 0); k != 0 || err == nil {
			t.Fatalf("pread of an empty file: %d bytes, err %v", k, err)
		}
		return
	}
	r := rand.New(rand.NewPCG(seed, uint64(len(want))))
	for i := range n {
		off := r.Int64N(int64(len(want)))
		ln := 1 + r.IntN(256<<10)
		if i%10 == 0 { // some reads cross the end
			ln = int(int64(len(want))-off) + r.IntN(4096)
		}
		buf := make([]byte, ln)
		k, err := f.ReadAt(buf, off)
		end := min(off+int64(ln), int64(len(want)))
		if int64(k) != end-off {
			t.Fatalf("pread(%s, off %d, len %d) = %d bytes (err %v), want %d", path, off, ln, k, err, end-off)
		}
		if !bytes.Equal(buf[:k], want[off:end]) {
			t.Fatalf("pread(%s, off %d, len %d): bytes differ from the upload", path, off, ln)
		}
	}
}

// jsonList decodes a JSON array of objects, also when it is wrapped in an
// object with one array field (e.g. {"images": [...]}).
func jsonList(s string) ([]map[string]any, error) {
	var list []map[string]any
	if err := json.Unmarshal([]byte(s), &list); err == nil {
		return list, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &obj); err != nil {
		return nil, fmt.Errorf("not JSON: %w: %.300q", err, s)
	}
	for _, v := range obj {
		if err := json.Unmarshal(v, &list); err == nil {
			return list, nil
		}
	}
	return nil, fmt.Errorf("no list in JSON %.300q", s)
}

// ids collects the string values of key in a JSON list.
func ids(list []map[string]any, key string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, m := range list {
		if s, ok := m[key].(string); ok {
			out[s] = m
		}
	}
	return out
}
