package inspect

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// seedCap bounds the corpus seeds given to the fuzzers.
const seedCap = 96 << 10

// addCorpusSeeds adds the corpus files (their first seedCap bytes) and
// synthetic images.
func addCorpusSeeds(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(corpusDir, "*", "*"))
	for _, p := range paths {
		if strings.HasSuffix(p, ".json") || strings.HasSuffix(p, ".md") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// Big seeds slow every execution and take long to minimize; the
		// head holds what the header formats need, and the synthetic
		// seeds below cover the structures at the end of a file.
		if len(b) > seedCap {
			b = b[:seedCap]
		}
		f.Add(b)
	}
	sparseSelf := `RW 512 SPARSE "s.vmdk"`
	for _, b := range [][]byte{
		buildQCOW2(qcow2Opts{clusterBits: 9, size: 1 << 20, backing: "b", exts: []qcow2Ext{{qcow2ExtDataFile, []byte("d")}}}),
		buildVMDKSparse(3, 512, vmdkDesc("streamOptimized", "", sparseSelf), vmdkDesc("streamOptimized", "", sparseSelf, `RW 1 FLAT "/x"`)),
		buildDynamicVHD(vhdTypeDiff, 1<<20, "p.vhd"),
		buildFixedVHD("vpc ", 4096, 1, 1, 8),
		buildVHDX(append(vhdxStdItems(1<<20, 1<<20, 2), vhdxItem{vhdxMetaParent, vhdxLocator("p"), 4}), false),
		buildVDI(vdiVersion11, vdiTypeDynamic, 1<<20, 1<<20, false),
		buildISO([]byte(qcow2Magic), isoPrimary, 40),
	} {
		f.Add(b)
	}
}

// detectChecked runs Detect on b and checks what must hold for any input:
// no error from an in-memory reader, bounded reads, the result invariants,
// and the same answer twice.
func detectChecked(t *testing.T, b []byte) Result {
	cr := &countingReader{data: b}
	res, err := Detect(cr, int64(len(b)))
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if cr.total > maxTotalRead || cr.reads > 64 {
		t.Fatalf("%d reads, %d bytes", cr.reads, cr.total)
	}
	checkInvariants(t, b, res)
	again, _ := Detect(bytes.NewReader(b), int64(len(b)))
	if !reflect.DeepEqual(res, again) {
		t.Fatalf("not deterministic: %+v vs %+v", res, again)
	}
	return res
}

func FuzzDetect(f *testing.F) {
	addCorpusSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) { detectChecked(t, b) })
}

// The per-format fuzzers force the magic (and fix checksums) so that the
// mutations reach the parser instead of falling back to raw.

func FuzzQCOW2(f *testing.F) {
	f.Add(buildQCOW2(qcow2Opts{clusterBits: 9, size: 1 << 20})[:1024])
	f.Add(buildQCOW2(qcow2Opts{version: 2, clusterBits: 9, size: 1 << 20, backing: "b"})[:1024])
	f.Add(buildQCOW2(qcow2Opts{clusterBits: 9, incompat: 4, exts: []qcow2Ext{{qcow2ExtBackingFmt, []byte("raw")}, {qcow2ExtDataFile, []byte("d")}}})[:1024])
	f.Fuzz(func(t *testing.T, b []byte) {
		b = forceAt(b, 0, qcow2Magic)
		if res := detectChecked(t, b); res.Format != FormatQCOW2 {
			t.Fatalf("format %s", res.Format)
		}
	})
}

func FuzzVMDK(f *testing.F) {
	self := `RW 512 SPARSE "s.vmdk"`
	f.Add(buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", self), ""))
	f.Add(buildVMDKSparse(3, 512, vmdkDesc("streamOptimized", "", self), vmdkDesc("streamOptimized", "parentFileNameHint=\"p\"\n", self, `RW 1 FLAT "/x"`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = forceAt(b, 0, vmdkMagic)
		if res := detectChecked(t, b); res.Format != FormatVMDK {
			t.Fatalf("format %s", res.Format)
		}
	})
}

func FuzzVMDKDescriptor(f *testing.F) {
	f.Add(vmdkDesc("monolithicFlat", "", `RW 16 FLAT "../../etc/hostname" 0`))
	f.Add(vmdkDesc("twoGbMaxExtentSparse", "parentFileNameHint=\"a\"\n", `RW 16 SPARSE "a-s001.vmdk"`, "RDONLY 5 ZERO", "NOACCESS\t1\tVMFS\t\"x\""))
	f.Fuzz(func(t *testing.T, text string) {
		d := parseVMDKDescriptor([]byte(text))
		if len(d.extents) > vmdkMaxExtents {
			t.Fatalf("%d extents", len(d.extents))
		}
		for _, e := range d.extents {
			if e.Sectors < 0 || strings.ContainsAny(e.Filename, "\"\n") {
				t.Fatalf("bad extent %+v", e)
			}
		}
		res := detectChecked(t, []byte("version=1\n"+text))
		if res.Format != FormatVMDK {
			t.Fatalf("format %s", res.Format)
		}
		// Every extent that names a file makes a descriptor-only image unsafe.
		for _, e := range res.Details.Extents {
			if e.Type != "ZERO" && res.Safe() == nil {
				t.Fatalf("extent %+v passed as safe", e)
			}
		}
	})
}

func FuzzVHD(f *testing.F) {
	f.Add(buildFixedVHD("vpc ", 1024, 1, 1, 2))
	f.Add(buildDynamicVHD(vhdTypeDiff, 1<<20, "p.vhd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// A footer at both ends, with valid checksums, so both paths run.
		if len(b) < 2*vhdFooterSize {
			return
		}
		b = forceAt(b, 0, vhdCookie)
		b = forceAt(b, len(b)-vhdFooterSize, vhdCookie)
		// The dynamic header, where the footer says, unless it would
		// overlap either footer copy.
		if off := be64(b, 16); off >= vhdFooterSize && off < uint64(len(b)) && uint64(len(b))-off >= vhdDynHeaderSize+vhdFooterSize {
			h := b[off : off+vhdDynHeaderSize]
			copy(h, vhdDynCookie)
			binary.BigEndian.PutUint32(h[36:], vhdChecksum(h, 36))
		}
		for _, off := range []int{0, len(b) - vhdFooterSize} {
			binary.BigEndian.PutUint32(b[off+64:], vhdChecksum(b[off:off+vhdFooterSize], 64))
		}
		if res := detectChecked(t, b); res.Format != FormatVHD {
			t.Fatalf("format %s", res.Format)
		}
	})
}

func FuzzVHDX(f *testing.F) {
	f.Add(buildVHDX(vhdxStdItems(1<<20, 1<<20, 0), false))
	f.Add(buildVHDX(append(vhdxStdItems(1<<20, 1<<20, 2), vhdxItem{vhdxMetaParent, vhdxLocator(`..\p.vhdx`), 4}), true))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = forceAt(b, 0, vhdxSignature)
		// Keep the checksummed structures valid so mutations get past them.
		for _, s := range []struct{ off, n int }{{vhdxHeader1, vhdxHeaderSize}, {vhdxHeader2, vhdxHeaderSize}, {vhdxRegion1, vhdxRegionSize}, {vhdxRegion2, vhdxRegionSize}} {
			if s.off+s.n <= len(b) {
				putCRC32C(b[s.off : s.off+s.n])
			}
		}
		if res := detectChecked(t, b); res.Format != FormatVHDX {
			t.Fatalf("format %s", res.Format)
		}
	})
}

func FuzzVDI(f *testing.F) {
	f.Add(buildVDI(vdiVersion11, vdiTypeDynamic, 1<<30, 1<<20, false))
	f.Add(buildVDI(vdiVersion11, vdiTypeDiff, 1<<30, 1<<20, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 0x44 {
			return
		}
		b = bytes.Clone(b)
		b[0] = 0 // not another format's magic
		binary.LittleEndian.PutUint32(b[0x40:], vdiSignature)
		if res := detectChecked(t, b); res.Format != FormatVDI {
			t.Fatalf("format %s", res.Format)
		}
	})
}

func FuzzISO(f *testing.F) {
	f.Add(buildISO(nil, isoPrimary, 40))
	f.Add(buildISO([]byte(qcow2Magic), isoPrimary, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < isoDescriptorOff+isoDescriptorLen {
			return
		}
		b = forceAt(b, isoDescriptorOff+1, "CD001")
		b[isoDescriptorOff+6] = 1
		res := detectChecked(t, b)
		if b[isoDescriptorOff] == isoPrimary && !res.Ambiguous && res.Format != FormatISO {
			t.Fatalf("an ISO without another header was called %s", res.Format)
		}
	})
}

// forceAt returns a copy of b (grown if needed) with s at off.
func forceAt(b []byte, off int, s string) []byte {
	out := make([]byte, max(len(b), off+len(s)))
	copy(out, b)
	copy(out[off:], s)
	return out
}
