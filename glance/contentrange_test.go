package glance

import (
	"errors"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want contentRange
		ok   bool
	}{
		{"bytes 0-99/1048576", contentRange{0, 99, 1048576}, true},
		{"bytes 1048575-1048575/1048576", contentRange{1048575, 1048575, 1048576}, true},
		{"bytes 0-0/1", contentRange{0, 0, 1}, true},
		{"bytes 10-19/*", contentRange{10, 19, -1}, true},
		{"bytes */1048576", contentRange{-1, -1, 1048576}, true},
		{"bytes */0", contentRange{-1, -1, 0}, true},
		{"BYTES 1-2/3", contentRange{1, 2, 3}, true},
		{"  bytes 1-2/3  ", contentRange{1, 2, 3}, true},
		{"", contentRange{}, false},
		{"bytes", contentRange{}, false},
		{"bytes */*", contentRange{}, false},
		{"items 0-1/2", contentRange{}, false},
		{"bytes 5-4/10", contentRange{}, false},  // end before start
		{"bytes 0-10/10", contentRange{}, false}, // end past total
		{"bytes -1-5/10", contentRange{}, false},
		{"bytes +1-5/10", contentRange{}, false},
		{"bytes 1-5/1 0", contentRange{}, false},
		{"bytes 0-5", contentRange{}, false},
		{"bytes 0-99999999999999999999/1", contentRange{}, false},
		{"bytes 0x1-5/10", contentRange{}, false},
	} {
		got, err := parseContentRange(tc.in)
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("parseContentRange(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if !tc.ok && !errors.Is(err, errContentRangeSyntax) {
			t.Errorf("parseContentRange(%q) = %+v, %v; want a syntax error", tc.in, got, err)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes */5", "bytes 1-2/*", "bytes 9-1/3", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cr, err := parseContentRange(s)
		if err != nil {
			return
		}
		// Whatever parses must be a consistent range.
		if cr.Total < -1 || (cr.Start == -1) != (cr.End == -1) {
			t.Fatalf("%q parsed to %+v", s, cr)
		}
		if cr.Start >= 0 && (cr.End < cr.Start || (cr.Total >= 0 && cr.End >= cr.Total)) {
			t.Fatalf("%q parsed to an inconsistent %+v", s, cr)
		}
		if cr.Start == -1 && cr.Total < 0 {
			t.Fatalf("%q parsed to an empty %+v", s, cr)
		}
	})
}
