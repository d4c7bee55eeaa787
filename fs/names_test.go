package fs

import (
	"math/rand"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// unescapeName inverts escapeName; tests use it to prove injectivity.
func unescapeName(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), true
}

func TestEscapeName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain.iso", "plain.iso"},
		{"a/b", "a%2Fb"},
		{"100%", "100%25"},
		{"nul\x00x", "nul%00x"},
		{"tab\tnl\n", "tab%09nl%0A"},
		{"del\x7f", "del%7F"},
		{"c1\u0085", "c1%C2%85"},
		{"bad\xffutf8", "bad%FFutf8"},
		{"ünïcödé ✓", "ünïcödé ✓"},
		{"", ""},
		{"..", ".."},
	} {
		if got := escapeName(tc.in); got != tc.want {
			t.Errorf("escapeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTruncName(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"short", "x.iso", 255, "x.iso"},
		{"keeps ext", long + ".iso", 10, "aaaaaa.iso"},
		{"utf8 boundary", "ééééé", 5, "éé"}, // é is 2 bytes
		{"not inside escape", "abc%2Fdef", 5, "abc"},
		{"not inside escape 2", "abc%2Fdef", 4, "abc"},
		{"after escape", "abc%2Fdef", 6, "abc%2F"},
		{"long ext dropped", "a." + strings.Repeat("e", 12), 10, "a.eeeeeeee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := truncName(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("truncName(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if len(got) > tc.max || !utf8.ValidString(got) {
				t.Errorf("truncName(%q, %d) = %q: too long or bad UTF-8", tc.in, tc.max, got)
			}
		})
	}
}

func TestDisplayNames(t *testing.T) {
	id := func(c byte) string { return strings.Repeat(string(c), 8) + "-0000-0000-0000-000000000000" }
	long := strings.Repeat("n", 300)
	imgs := []Image{
		{ID: id('1'), Name: "ubuntu.iso", DiskFormat: "iso"},
		{ID: id('2'), Name: "a/b", DiskFormat: "qcow2"},
		{ID: id('3'), Name: "..", DiskFormat: "raw"},
		{ID: id('4'), Name: "", DiskFormat: "raw"},
		{ID: id('5'), Name: "dup", DiskFormat: "raw"},
		{ID: id('6'), Name: "dup", DiskFormat: "raw"},
		{ID: id('7'), Name: "ctl\x01", DiskFormat: "ami"},
		{ID: id('8'), Name: long, DiskFormat: "vmdk"},
		{ID: id('9'), Name: "Win.VHDX", DiskFormat: "vhdx"},
		{ID: id('a'), Name: ".", DiskFormat: "vdi"},
		{ID: id('b'), Name: "x", DiskFormat: "iso"},
		{ID: id('c'), Name: "x.iso", DiskFormat: "iso"}, // same ISO name as "x"
	}
	plain := displayNames(imgs, false)
	iso := displayNames(imgs, true)
	wantPlain := map[string]string{
		id('1'): "ubuntu.iso",
		id('2'): "a%2Fb",
		id('3'): id('3'),
		id('4'): id('4'),
		id('5'): "55555555-dup",
		id('6'): "66666666-dup",
		id('7'): "ctl%01",
		id('8'): strings.Repeat("n", 255),
		id('9'): "Win.VHDX",
		id('a'): id('a'),
		id('b'): "x",
		id('c'): "x.iso",
	}
	wantISO := map[string]string{
		id('1'): "ubuntu.iso",
		id('2'): "a%2Fb.qcow2",
		id('3'): id('3') + ".raw",
		id('4'): id('4') + ".raw",
		id('5'): "55555555-dup.raw",
		id('6'): "66666666-dup.raw",
		id('7'): "ctl%01.img",
		id('8'): strings.Repeat("n", 250) + ".vmdk",
		id('9'): "Win.VHDX",
		id('a'): id('a') + ".vdi",
		id('b'): "bbbbbbbb-x.iso",
		id('c'): "cccccccc-x.iso",
	}
	for k, want := range wantPlain {
		if plain[k] != want {
			t.Errorf("plain name of %s = %q, want %q", k, plain[k], want)
		}
	}
	for k, want := range wantISO {
		if iso[k] != want {
			t.Errorf("ISO name of %s = %q, want %q", k, iso[k], want)
		}
	}
	checkNames(t, imgs, plain)
	checkNames(t, imgs, iso)
}

func TestDisplayNamesTruncatedDuplicates(t *testing.T) {
	// Names equal in their first 255 bytes collide only after truncation.
	long := strings.Repeat("z", 260)
	imgs := []Image{
		{ID: "id-one", Name: long + "1"},
		{ID: "id-two", Name: long + "2"},
		{ID: "id-three", Name: strings.Repeat("z", 255)}, // equals both truncated
	}
	names := displayNames(imgs, false)
	checkNames(t, imgs, names)
	for id, n := range names {
		if !strings.HasPrefix(n, id[:min(len(id), idPrefixLen)]+"-") {
			t.Errorf("%s: %q lacks the id prefix of a duplicate", id, n)
		}
	}
}

func TestDisplayNamesIDPrefixClash(t *testing.T) {
	// Same 8-byte id prefix, same name, and a natural name equal to a
	// prefixed one: still unique.
	imgs := []Image{
		{ID: "abcdefgh-1", Name: "n"},
		{ID: "abcdefgh-2", Name: "n"},
		{ID: "zzz", Name: "abcdefgh-n"},
	}
	names := displayNames(imgs, false)
	checkNames(t, imgs, names)
	if names["zzz"] != "abcdefgh-n" {
		t.Errorf("unique name was taken from its image: %q", names["zzz"])
	}
}

// checkNames asserts the invariants of a display name assignment.
func checkNames(t *testing.T, imgs []Image, names map[string]string) {
	t.Helper()
	if len(names) != len(imgs) {
		t.Fatalf("%d names for %d images", len(names), len(imgs))
	}
	seen := map[string]string{}
	for _, img := range imgs {
		n, ok := names[img.ID]
		if !ok {
			t.Fatalf("image %q has no name", img.ID)
		}
		if n == "" || n == "." || n == ".." || len(n) > maxNameLen || !utf8.ValidString(n) {
			t.Errorf("image %q: bad name %q", img.ID, n)
		}
		for _, r := range n {
			if r == '/' || unicode.IsControl(r) {
				t.Errorf("image %q: name %q holds %q", img.ID, n, r)
			}
		}
		if other, dup := seen[n]; dup {
			t.Errorf("images %q and %q share name %q", other, img.ID, n)
		}
		seen[n] = img.ID
	}
}

func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"", "a/b", "%", "%2F", "\x00", "ü", "\xff", ".."} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea := escapeName(a)
		back, ok := unescapeName(ea)
		if !ok || back != a {
			t.Fatalf("escapeName(%q) = %q does not decode back (%q)", a, ea, back)
		}
		if a != b && ea == escapeName(b) {
			t.Fatalf("escapeName not injective: %q and %q both give %q", a, b, ea)
		}
		if !utf8.ValidString(ea) || strings.ContainsAny(ea, "/\x00") {
			t.Fatalf("escapeName(%q) = %q is not a safe name", a, ea)
		}
	})
}

func FuzzDisplayNames(f *testing.F) {
	f.Add("a", "a", "b/c", "raw", int64(1))
	f.Add("", ".", "..", "iso", int64(2))
	f.Add(strings.Repeat("é", 200), strings.Repeat("é", 201), "x.iso", "iso", int64(3))
	f.Fuzz(func(t *testing.T, n1, n2, n3, format string, seed int64) {
		imgs := []Image{
			{ID: "11111111-a", Name: n1, DiskFormat: format},
			{ID: "11111111-b", Name: n2, DiskFormat: format},
			{ID: "22222222-c", Name: n3, DiskFormat: "qcow2"},
			{ID: "n", Name: n1 + n2, DiskFormat: format},
		}
		for _, iso := range []bool{false, true} {
			names := displayNames(imgs, iso)
			checkNames(t, imgs, names)
			shuffled := append([]Image(nil), imgs...)
			rand.New(rand.NewSource(seed)).Shuffle(len(shuffled), func(i, j int) {
				shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
			})
			again := displayNames(shuffled, iso)
			for id, n := range names {
				if again[id] != n {
					t.Fatalf("order changed the name of %s: %q vs %q", id, n, again[id])
				}
			}
		}
	})
}
