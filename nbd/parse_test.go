package nbd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
)

func TestParseInfoRequest(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want infoRequest
		ok   bool
	}{
		{"name and two infos", infoData("abc", infoName, infoBlockSize), infoRequest{"abc", []uint16{infoName, infoBlockSize}}, true},
		{"empty name no infos", infoData(""), infoRequest{"", []uint16{}}, true},
		{"empty data", nil, infoRequest{}, false},
		{"name longer than data", []byte{0, 0, 0, 5, 'a', 'b'}, infoRequest{}, false},
		{"missing count", []byte{0, 0, 0, 1, 'a'}, infoRequest{}, false},
		{"count larger than data", []byte{0, 0, 0, 1, 'a', 0, 2, 0, 1}, infoRequest{}, false},
		{"trailing byte", append(infoData("a", 1), 0), infoRequest{}, false},
		{"NUL in name", infoData("a\x00b"), infoRequest{}, false},
		{"invalid UTF-8", infoData("a\xffb"), infoRequest{}, false},
		{"name over 4096 bytes", infoData(strings.Repeat("x", 4097)), infoRequest{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseInfoRequest(tt.data)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v, not errMalformed", err)
			}
			if tt.ok && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseMetaRequest(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want metaRequest
		ok   bool
	}{
		{"two queries", metaData("x", "base:allocation", "qemu:"), metaRequest{"x", []string{"base:allocation", "qemu:"}}, true},
		{"no queries", metaData("x"), metaRequest{"x", []string{}}, true},
		{"missing count", []byte{0, 0, 0, 0}, metaRequest{}, false},
		{"count too large for data", append(metaData("x")[:5], 0xff, 0xff, 0xff, 0xff), metaRequest{}, false},
		{"query truncated", metaData("x", "base:allocation")[:20], metaRequest{}, false},
		{"trailing bytes", append(metaData("x", "a"), 1, 2), metaRequest{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMetaRequest(tt.data)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMetaMatches(t *testing.T) {
	tests := []struct {
		q          string
		list, want bool
	}{
		{"base:allocation", false, true},
		{"base:allocation", true, true},
		{"base:", true, true},
		{"base:", false, false},
		{"", true, true},
		{"", false, false},
		{"qemu:dirty-bitmap:a", true, false},
		{"base:allocationX", false, false},
	}
	for _, tt := range tests {
		if got := metaMatches(tt.q, tt.list); got != tt.want {
			t.Errorf("metaMatches(%q, %v) = %v", tt.q, tt.list, got)
		}
	}
}

func TestParseRequest(t *testing.T) {
	r := request{flags: 3, typ: cmdBlockStatus, handle: 0x0102030405060708, offset: 1 << 40, length: 4096}
	b := appendRequest(nil, r)
	if len(b) != requestBytes {
		t.Fatalf("encoded %d bytes", len(b))
	}
	got, err := parseRequest(b)
	if err != nil || got != r {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	b[0] ^= 1
	if _, err := parseRequest(b); !errors.Is(err, errBadMagic) {
		t.Fatalf("bad magic: %v", err)
	}
	if _, err := parseRequest(b[:27]); !errors.Is(err, errShortRequest) {
		t.Fatalf("short: %v", err)
	}
}

func TestNormalizeExtents(t *testing.T) {
	d := func(off, n int64) cache.Extent { return cache.Extent{Off: off, Len: n} }
	z := func(off, n int64) cache.Extent { return cache.Extent{Off: off, Len: n, Zero: true} }
	tests := []struct {
		name   string
		in     []cache.Extent
		off, n int64
		want   []cache.Extent
		ok     bool
	}{
		{"exact", []cache.Extent{d(0, 10), z(10, 10)}, 0, 20, []cache.Extent{d(0, 10), z(10, 10)}, true},
		{"merge same kind", []cache.Extent{z(0, 5), z(5, 5), d(10, 5), d(15, 5)}, 0, 20, []cache.Extent{z(0, 10), d(10, 10)}, true},
		{"clip both ends", []cache.Extent{z(0, 100), d(100, 100)}, 50, 100, []cache.Extent{z(50, 50), d(100, 50)}, true},
		{"skip extents before", []cache.Extent{d(0, 10), z(10, 10)}, 10, 10, []cache.Extent{z(10, 10)}, true},
		{"short map: tail is data", []cache.Extent{z(0, 10)}, 0, 30, []cache.Extent{z(0, 10), d(10, 20)}, true},
		{"short map: tail merges with data", []cache.Extent{d(0, 10)}, 0, 30, []cache.Extent{d(0, 30)}, true},
		{"empty map", nil, 7, 3, []cache.Extent{d(7, 3)}, true},
		{"gap", []cache.Extent{d(0, 10), z(15, 5)}, 0, 20, nil, false},
		{"overlap", []cache.Extent{d(0, 10), z(5, 10)}, 0, 20, nil, false},
		{"empty extent", []cache.Extent{d(0, 0), z(0, 10)}, 0, 10, nil, false},
		{"starts late", []cache.Extent{z(5, 10)}, 0, 10, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := normalizeExtents(tt.in, tt.off, tt.n)
			if ok != tt.ok || (ok && !reflect.DeepEqual(got, tt.want)) {
				t.Fatalf("got %v %v, want %v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	t.Run("many extents are capped, rest is data", func(t *testing.T) {
		var in []cache.Extent
		for i := range int64(2*maxExtents + 10) {
			in = append(in, cache.Extent{Off: i, Len: 1, Zero: i%2 == 0})
		}
		got, ok := normalizeExtents(in, 0, int64(len(in)))
		if !ok || len(got) < maxExtents || len(got) > maxExtents+1 {
			t.Fatalf("ok %v, %d extents", ok, len(got))
		}
		pos := int64(0)
		for _, e := range got {
			if e.Off != pos {
				t.Fatalf("extent %+v at %d", e, pos)
			}
			pos += e.Len
		}
		if last := got[len(got)-1]; last.Zero || pos != int64(len(in)) {
			t.Fatalf("last extent %+v, covered %d of %d", last, pos, len(in))
		}
	})
}

func TestBufPool(t *testing.T) {
	var p bufPool
	for _, n := range []int{1, 4096, 4097, 65536, 1 << 20, maxBlockSize - 1, maxBlockSize} {
		b := p.get(n)
		if len(*b) != n || cap(*b) < n || cap(*b) > 2*n+4096 {
			t.Fatalf("get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.put(b)
	}
	if c := poolClass(maxBlockSize); c != poolClasses-1 {
		t.Fatalf("class of max block size = %d, want %d", c, poolClasses-1)
	}
}

// FuzzOptions drives the whole handshake with arbitrary client bytes. It
// must end without panicking, and what we send must parse as a greeting,
// well-formed option replies and, only on success, the NBD_OPT_EXPORT_NAME
// reply.
func FuzzOptions(f *testing.F) {
	opt := func(id uint32, data []byte) []byte {
		b := be.AppendUint64(nil, magicOption)
		b = be.AppendUint32(b, id)
		b = be.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	flags := be.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat(flags, opt(optList, nil), opt(optGo, infoData("a", infoName, infoDescription))))
	f.Add(cat(flags, opt(optStructuredReply, nil), opt(optSetMetaContext, metaData("a", metaBaseName)), opt(optGo, infoData("a"))))
	f.Add(cat(flags, opt(optStructuredReply, nil), opt(optListMetaContext, metaData("a")), opt(optAbort, nil)))
	f.Add(cat(flags, opt(optInfo, infoData("zz")), opt(optExportName, []byte("a"))))
	f.Add(cat(be.AppendUint32(nil, 0), opt(optExportName, []byte("a"))))
	f.Add(cat(flags, opt(99, []byte("junk")), opt(optStartTLS, nil)))
	f.Add([]byte("garbage"))

	ex := newExports(Export{Name: "a", Description: "desc", Source: &memSource{data: make([]byte, 1000)}})
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		sess, err := negotiate(bufio.NewReader(bytes.NewReader(in)), &out, ex)
		if err == nil && sess.export.Name != "a" {
			t.Fatalf("session for unknown export %+v", sess)
		}
		b := out.Bytes()
		if len(b) < 18 || be.Uint64(b) != magicInit {
			t.Fatalf("no greeting")
		}
		b = b[18:]
		for len(b) >= 20 && be.Uint64(b) == magicOptReply {
			n := int(be.Uint32(b[16:]))
			if 20+n > len(b) {
				t.Fatalf("truncated option reply")
			}
			b = b[20+n:]
		}
		switch {
		case len(b) == 0:
		case err == nil && (len(b) == 10 || len(b) == 134) && be.Uint64(b) == 1000:
		default:
			t.Fatalf("%d unexplained bytes after replies (err %v)", len(b), err)
		}
		// Round trips of the option parsers on the same bytes.
		if r, err := parseInfoRequest(in); err == nil {
			if !bytes.Equal(infoData(r.name, r.infos...), in) {
				t.Fatalf("info request does not round trip")
			}
		}
		if r, err := parseMetaRequest(in); err == nil {
			if !bytes.Equal(metaData(r.name, r.queries...), in) {
				t.Fatalf("meta request does not round trip")
			}
		}
	})
}

// lockedBuffer collects replies written by concurrent workers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// FuzzRequest feeds arbitrary bytes to the transmission loop of a
// structured session. It must end without panicking, and the output must be
// a clean sequence of reply messages.
func FuzzRequest(f *testing.F) {
	req := func(r request) []byte { return appendRequest(nil, r) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat(req(request{typ: cmdRead, offset: 0, length: 100}), req(request{typ: cmdBlockStatus, offset: 0, length: 9000}), req(request{typ: cmdDisc})))
	f.Add(cat(req(request{typ: cmdWrite, offset: 0, length: 4}), []byte{1, 2, 3, 4}, req(request{typ: cmdFlush})))
	f.Add(cat(req(request{typ: cmdRead, flags: cmdFlagDF, offset: 4000, length: 5000}), req(request{typ: cmdTrim, length: 1})))
	f.Add(cat(req(request{typ: cmdRead, offset: 1 << 62, length: 1 << 31})))
	f.Add([]byte{0x25, 0x60, 0x95, 0x13, 0})

	data := make([]byte, 10000)
	copy(data[5000:], patterned(3000, 1))
	src := &mapSource{memSource: &memSource{data: data}, block: 1024}
	f.Fuzz(func(t *testing.T, in []byte) {
		if r, err := parseRequest(in); err == nil && !bytes.Equal(appendRequest(nil, r), in[:requestBytes]) {
			t.Fatalf("request does not round trip")
		}
		var out lockedBuffer
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := &conn{
			r:       bufio.NewReader(bytes.NewReader(in)),
			w:       &out,
			sess:    session{export: Export{Name: "f", Source: src}, structured: true, meta: true},
			size:    src.Size(),
			pool:    &bufPool{},
			log:     testLogger(t),
			readTO:  time.Second,
			writeTO: time.Second,
			ctx:     ctx,
			cancel:  cancel,
			sem:     make(chan struct{}, 4),
		}
		_ = c.serve()
		b := out.b.Bytes()
		for len(b) > 0 {
			switch {
			case len(b) >= 16 && be.Uint32(b) == magicSimpleReply:
				b = b[16:]
			case len(b) >= 20 && be.Uint32(b) == magicStructured:
				n := int(be.Uint32(b[16:]))
				if 20+n > len(b) {
					t.Fatalf("truncated chunk")
				}
				b = b[20+n:]
			default:
				t.Fatalf("garbage in reply stream: % x", b[:min(len(b), 20)])
			}
		}
	})
}

var _ io.Writer = (*lockedBuffer)(nil)
