package nbd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func handshakeExports() *staticExports {
	s := newExports(
		Export{Name: "sd1/img-a", Description: "Fedora 40", Source: &memSource{data: patterned(1000, 1), id: "a"}},
		Export{Name: "img-b", Description: "", Source: &memSource{data: patterned(5<<20, 2), id: "b"}},
	)
	s.fail = map[string]error{"sd2/img-c": errors.New("domain lab could not be listed: connection refused")}
	return s
}

func TestHandshake(t *testing.T) {
	ex := handshakeExports()
	ts := startServer(t, Config{}, ex)
	tests := []struct {
		name string
		run  func(t *testing.T, c *rawClient)
	}{
		{"list names and descriptions", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle | clientNoZeroes)
			c.opt(optList, nil)
			rs := c.optReplies()
			if len(rs) != 3 || rs[2].typ != repAck {
				t.Fatalf("replies %+v", rs)
			}
			var got []string
			for _, r := range rs[:2] {
				if r.typ != repServer || r.opt != optList {
					t.Fatalf("reply %+v", r)
				}
				n := be.Uint32(r.data)
				got = append(got, string(r.data[4:4+n])+"|"+string(r.data[4+n:]))
			}
			if want := "img-b||sd1/img-a|Fedora 40"; strings.Join(got, "|") != want {
				t.Fatalf("list = %q, want %q", strings.Join(got, "|"), want)
			}
		}},
		{"list with data is invalid", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optList, []byte("x"))
			if r := c.optReply(); r.typ != repErrInvalid {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"info gives size flags name description block size", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle | clientNoZeroes)
			c.opt(optInfo, infoData("sd1/img-a", infoName, infoDescription, infoBlockSize))
			seen := map[uint16][]byte{}
			for _, r := range c.optReplies() {
				if r.typ == repInfo {
					seen[be.Uint16(r.data)] = r.data[2:]
				} else if r.typ != repAck {
					t.Fatalf("reply %+v", r)
				}
			}
			exp := seen[infoExport]
			if len(exp) != 10 || be.Uint64(exp) != 1000 {
				t.Fatalf("NBD_INFO_EXPORT % x", exp)
			}
			wantFlags := flagHasFlags | flagReadOnly | flagSendFlush | flagCanMultiConn
			if f := be.Uint16(exp[8:]); f != wantFlags {
				t.Fatalf("flags %#x, want %#x", f, wantFlags)
			}
			if string(seen[infoName]) != "sd1/img-a" || string(seen[infoDescription]) != "Fedora 40" {
				t.Fatalf("name %q description %q", seen[infoName], seen[infoDescription])
			}
			bs := seen[infoBlockSize]
			if len(bs) != 12 || be.Uint32(bs) != 1 || be.Uint32(bs[4:]) < 4096 || be.Uint32(bs[8:]) != 32<<20 {
				t.Fatalf("block size % x", bs)
			}
			// INFO does not end the handshake: another option works.
			c.opt(optList, nil)
			if rs := c.optReplies(); rs[len(rs)-1].typ != repAck {
				t.Fatalf("after INFO: %+v", rs)
			}
		}},
		{"info unknown export", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optInfo, infoData("nope"))
			if r := c.optReply(); r.typ != repErrUnknown || string(r.data) != `no export named "nope"` {
				t.Fatalf("reply %+v (%q)", r, r.data)
			}
		}},
		{"unresolved export names the cause", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle | clientNoZeroes)
			want := `no export named "sd2/img-c": domain lab could not be listed: connection refused`
			for _, opt := range []uint32{optInfo, optGo} {
				c.opt(opt, infoData("sd2/img-c"))
				if r := c.optReply(); r.typ != repErrUnknown || string(r.data) != want {
					t.Fatalf("option %d: reply %+v (%q), want ERR_UNKNOWN %q", opt, r, r.data, want)
				}
			}
			c.opt(optStructuredReply, nil)
			c.optReply()
			c.opt(optListMetaContext, metaData("sd2/img-c", metaBaseName))
			if r := c.optReply(); r.typ != repErrUnknown || string(r.data) != want {
				t.Fatalf("list meta context: reply %+v (%q), want ERR_UNKNOWN %q", r, r.data, want)
			}
			// The connection lives on.
			if size, _ := c.open2("img-b"); size != 5<<20 {
				t.Fatalf("size %d", size)
			}
		}},
		{"go malformed data", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optGo, []byte{0, 0, 0, 9, 'a'})
			if r := c.optReply(); r.typ != repErrInvalid {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"go unknown export then known", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle | clientNoZeroes)
			c.opt(optGo, infoData("nope"))
			if r := c.optReply(); r.typ != repErrUnknown {
				t.Fatalf("reply %+v", r)
			}
			size, flags := c.open2("img-b")
			if size != 5<<20 || flags&flagReadOnly == 0 {
				t.Fatalf("size %d flags %#x", size, flags)
			}
		}},
		{"one lookup for consecutive options on one name", func(t *testing.T, c *rawClient) {
			// qemu names the export in SET_META_CONTEXT, then in GO; a
			// lookup may take most of the handshake's bound.
			before := ex.count("sd1/img-a")
			if size, _ := c.open("sd1/img-a", true, true); size != 1000 {
				t.Fatalf("size %d", size)
			}
			if n := ex.count("sd1/img-a") - before; n != 1 {
				t.Fatalf("%d lookups of one name in one handshake, want 1", n)
			}
		}},
		{"structured reply adds DF", func(t *testing.T, c *rawClient) {
			_, flags := c.open("img-b", true, false)
			if flags&flagSendDF == 0 {
				t.Fatalf("flags %#x lack SEND_DF", flags)
			}
		}},
		{"structured reply with data is invalid", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optStructuredReply, []byte{1})
			if r := c.optReply(); r.typ != repErrInvalid {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"meta context needs structured replies", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optSetMetaContext, metaData("img-b", metaBaseName))
			if r := c.optReply(); r.typ != repErrInvalid {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"list meta contexts", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optStructuredReply, nil)
			c.optReplies()
			for _, q := range [][]string{nil, {"base:"}, {metaBaseName}, {"qemu:dirty-bitmap:x", metaBaseName}} {
				c.opt(optListMetaContext, metaData("img-b", q...))
				rs := c.optReplies()
				if len(rs) != 2 || rs[0].typ != repMetaContext || string(rs[0].data[4:]) != metaBaseName {
					t.Fatalf("queries %q: %+v", q, rs)
				}
			}
			c.opt(optListMetaContext, metaData("img-b", "qemu:"))
			if rs := c.optReplies(); len(rs) != 1 || rs[0].typ != repAck {
				t.Fatalf("other namespace: %+v", rs)
			}
		}},
		{"set meta context other namespace selects nothing", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optStructuredReply, nil)
			c.optReplies()
			c.opt(optSetMetaContext, metaData("img-b", "qemu:allocation-depth"))
			if rs := c.optReplies(); len(rs) != 1 || rs[0].typ != repAck {
				t.Fatalf("replies %+v", rs)
			}
		}},
		{"set meta context unknown export", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optStructuredReply, nil)
			c.optReplies()
			c.opt(optSetMetaContext, metaData("nope", metaBaseName))
			if r := c.optReply(); r.typ != repErrUnknown {
				t.Fatalf("reply %+v", r)
			}
		}},
		{"set meta context gives id", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optStructuredReply, nil)
			c.optReplies()
			c.opt(optSetMetaContext, metaData("img-b", metaBaseName))
			rs := c.optReplies()
			if len(rs) != 2 || rs[0].typ != repMetaContext || be.Uint32(rs[0].data) != metaContextID || string(rs[0].data[4:]) != metaBaseName {
				t.Fatalf("replies %+v", rs)
			}
		}},
		{"unknown option and starttls unsupported", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			for _, o := range []uint32{optStartTLS, 4, 11, 12, 999} {
				c.opt(o, []byte("abc"))
				if r := c.optReply(); r.typ != repErrUnsup || r.opt != o {
					t.Fatalf("option %d: %+v", o, r)
				}
			}
		}},
		{"abort acks and closes", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optAbort, nil)
			if r := c.optReply(); r.typ != repAck {
				t.Fatalf("reply %+v", r)
			}
			c.expectClosed()
		}},
		{"oversized option refused and closed", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			b := be.AppendUint64(nil, magicOption)
			b = be.AppendUint32(b, optList)
			b = be.AppendUint32(b, 1<<30)
			c.write(b)
			if r := c.optReply(); r.typ != repErrTooBig {
				t.Fatalf("reply %+v", r)
			}
			c.expectClosed()
		}},
		{"unknown client flags close", func(t *testing.T, c *rawClient) {
			c.greet(1 << 7)
			c.expectClosed()
		}},
		{"bad option magic closes", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.write(bytes.Repeat([]byte{0xAB}, 16))
			c.expectClosed()
		}},
		{"export name with zeroes", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optExportName, []byte("sd1/img-a"))
			b := c.readN(8 + 2 + 124)
			if be.Uint64(b) != 1000 || be.Uint16(b[8:])&flagReadOnly == 0 || !bytes.Equal(b[10:], make([]byte, 124)) {
				t.Fatalf("export name reply % x", b[:10])
			}
			c.checkRead(0, 1000, patterned(1000, 1))
		}},
		{"export name without zeroes", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle | clientNoZeroes)
			c.opt(optExportName, []byte("img-b"))
			b := c.readN(10)
			if be.Uint64(b) != 5<<20 {
				t.Fatalf("size %d", be.Uint64(b))
			}
			// With NO_ZEROES the next bytes are the reply to our read.
			c.checkRead(4096, 10, patterned(5<<20, 2)[4096:4106])
		}},
		{"export name unknown closes", func(t *testing.T, c *rawClient) {
			c.greet(clientFixedNewstyle)
			c.opt(optExportName, []byte("nope"))
			c.expectClosed()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts.sock)
			c.t = t
			tt.run(t, c)
		})
	}
}

// open2 sends GO without any other option (handshake already greeted).
func (c *rawClient) open2(name string) (uint64, uint16) {
	c.t.Helper()
	c.opt(optGo, infoData(name))
	var size uint64
	var flags uint16
	for _, r := range c.optReplies() {
		if r.typ == repInfo && be.Uint16(r.data) == infoExport {
			size, flags = be.Uint64(r.data[2:]), be.Uint16(r.data[10:])
		} else if r.typ != repInfo && r.typ != repAck {
			c.t.Fatalf("GO: %+v", r)
		}
	}
	return size, flags
}

// checkRead does one simple-reply READ and compares the bytes.
func (c *rawClient) checkRead(off uint64, n uint32, want []byte) {
	c.t.Helper()
	c.send(request{typ: cmdRead, handle: 77, offset: off, length: n}, nil)
	h, errno, data := c.simpleReply(int(n))
	if h != 77 || errno != 0 || !bytes.Equal(data, want) {
		c.t.Fatalf("read %d@%d: handle %d errno %d, data equal %v", n, off, h, errno, bytes.Equal(data, want))
	}
}

func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, Config{HandshakeTimeout: 200 * time.Millisecond}, handshakeExports())
	c := dial(t, ts.sock)
	c.greet(clientFixedNewstyle)
	start := time.Now()
	c.expectClosed() // we never send an option
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about 200ms", d)
	}
}

// A garbage handshake kills only its own connection.
func TestGarbageThenGoodHandshake(t *testing.T) {
	ts := startServer(t, Config{}, handshakeExports())
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0xff}, 100),
		{0, 0, 0, 1, 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff},
	} {
		bad := dial(t, ts.sock)
		bad.readN(18)
		bad.write(garbage)
		bad.expectClosed()
	}
	good := dial(t, ts.sock)
	if size, _ := good.open("sd1/img-a", false, false); size != 1000 {
		t.Fatalf("size %d", size)
	}
	good.checkRead(0, 1000, patterned(1000, 1))
}

// Exports are looked up when the client picks one, so a new export is
// served to the next connection.
func TestExportsChangeBetweenConnections(t *testing.T) {
	ex := handshakeExports()
	ts := startServer(t, Config{}, ex)
	c := dial(t, ts.sock)
	c.greet(clientFixedNewstyle)
	c.opt(optGo, infoData("new"))
	if r := c.optReply(); r.typ != repErrUnknown {
		t.Fatalf("reply %+v", r)
	}
	ex.set(Export{Name: "new", Source: &memSource{data: patterned(3000, 9)}})
	c2 := dial(t, ts.sock)
	if size, _ := c2.open("new", false, false); size != 3000 {
		t.Fatalf("size %d", size)
	}
	c2.checkRead(100, 200, patterned(3000, 9)[100:300])
}
