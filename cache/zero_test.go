package cache

import "testing"

func TestIsZero(t *testing.T) {
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, true},
		{"one zero", []byte{0}, true},
		{"one byte", []byte{1}, false},
		{"long zeros", make([]byte, 10000), true},
		{"last byte set", func() []byte { p := make([]byte, 10000); p[9999] = 1; return p }(), false},
		{"byte after first chunk", func() []byte { p := make([]byte, 10000); p[4096] = 1; return p }(), false},
	}
	for _, tt := range tests {
		if got := isZero(tt.p); got != tt.want {
			t.Errorf("%s: isZero = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestZeroSet(t *testing.T) {
	var z zeroSet
	if z.has(0) || z.has(-1) {
		t.Fatal("empty set has a block")
	}
	z.set(0, 130)
	z.set(129, 130)
	z.set(129, 130) // again: counted once
	z.set(130, 130) // out of range: ignored
	z.set(-1, 130)
	for b := int64(-1); b <= 131; b++ {
		want := b == 0 || b == 129
		if z.has(b) != want {
			t.Errorf("has(%d) = %v, want %v", b, z.has(b), want)
		}
	}
	if z.count != 2 {
		t.Errorf("count = %d, want 2", z.count)
	}
}
