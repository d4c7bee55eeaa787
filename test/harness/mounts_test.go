package harness

import "testing"

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		line string
		want Mount
		ok   bool
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
			Mount{Point: "/mnt2", FSType: "ext3", Source: "/dev/root"}, true},
		{`120 25 0:50 / /tmp/a\040b rw,nosuid,nodev,relatime shared:1 - fuse.glancegw glancegw rw,user_id=0`,
			Mount{Point: "/tmp/a b", FSType: "fuse.glancegw", Source: "glancegw"}, true},
		{`1 2 0:1 / /x\134y rw - tmpfs tmp rw`, Mount{Point: `/x\y`, FSType: "tmpfs", Source: "tmp"}, true},
		{`1 2 0:1 / /trail\04 rw - tmpfs tmp rw`, Mount{Point: `/trail\04`, FSType: "tmpfs", Source: "tmp"}, true},
		{"garbage", Mount{}, false},
		{"1 2 3 - x", Mount{}, false},
	}
	for _, tt := range tests {
		got, ok := parseMountinfo(tt.line)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseMountinfo(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRandomBytesDeterministic(t *testing.T) {
	a, b, c := RandomBytes(1, 1000), RandomBytes(1, 1000), RandomBytes(2, 1000)
	if string(a) != string(b) {
		t.Fatal("same seed gave different bytes")
	}
	if string(a) == string(c) {
		t.Fatal("different seeds gave the same bytes")
	}
	if n := len(RandomBytes(3, 0)); n != 0 {
		t.Fatalf("RandomBytes(3, 0) has %d bytes", n)
	}
}
