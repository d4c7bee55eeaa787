package inspect

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func BenchmarkDetect(b *testing.B) {
	for _, name := range []string{
		"C12-qcow2-versions-virtual-size/v3-5GiB.qcow2",
		"C14-vmdk-descriptor-streamoptimized/stream-optimized-footer-evil.vmdk",
		"C15-vhd-fixed-footer-size/fixed-hyperv-creator.vhd",
		"C16-iso-hybrid-fat-detection/hybrid.iso",
		"extra-qemu-img/vhdx-dynamic.vhdx",
	} {
		data, err := os.ReadFile(filepath.Join(corpusDir, name))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(name), func(b *testing.B) {
			r := bytes.NewReader(data)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Detect(r, int64(len(data))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
