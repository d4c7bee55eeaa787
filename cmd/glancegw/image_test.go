package main

import (
	"testing"

	"github.com/glancegw/glancegw/hostd"
)

func TestDetectedColumn(t *testing.T) {
	for _, tc := range []struct {
		im   hostd.Image
		want string
	}{
		{hostd.Image{}, "-"},
		{hostd.Image{DetectedFormat: "unknown"}, "unknown"},
		{hostd.Image{DetectedFormat: "qcow2", DetectedVirtualSize: 5 << 30}, "qcow2 5.0 GiB"},
		{hostd.Image{DetectedFormat: "qcow2", DetectedVirtualSize: 1 << 20, DetectedUnsafe: []string{"backing file"}}, "qcow2 1.0 MiB unsafe"},
		{hostd.Image{DetectedFormat: "vmdk", DetectedUnsafe: []string{"extent"}}, "vmdk unsafe"},
	} {
		if got := detected(tc.im); got != tc.want {
			t.Errorf("detected(%+v) = %q, want %q", tc.im, got, tc.want)
		}
	}
}
