package inspect

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func detectBytes(t *testing.T, b []byte) Result {
	t.Helper()
	res, err := Detect(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	return res
}

func TestDetectSynthetic(t *testing.T) {
	setU32 := func(b []byte, off int, v uint32) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	sparseSelf := `RW 2048 SPARSE "disk.vmdk"`
	tests := []struct {
		name   string
		data   []byte
		format string
		size   int64
		reason string // "" = safe
		ambig  bool
	}{
		{"empty", nil, FormatRaw, 0, "", false},
		{"one byte", []byte{0x51}, FormatRaw, 1, "", false},
		{"zeros", make([]byte, 100000), FormatRaw, 100000, "", false},

		// qcow2
		{"qcow2 v2", buildQCOW2(qcow2Opts{version: 2, size: 1 << 30}), FormatQCOW2, 1 << 30, "", false},
		{"qcow2 v3", buildQCOW2(qcow2Opts{size: 5 << 30}), FormatQCOW2, 5 << 30, "", false},
		{"qcow2 v3 header 104", buildQCOW2(qcow2Opts{size: 1 << 20, headerLen: 104}), FormatQCOW2, 1 << 20, "", false},
		{"qcow2 zstd", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatCompression, compression: 1}), FormatQCOW2, 1 << 20, "", false},
		{"qcow2 extended l2", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatExtendedL2}), FormatQCOW2, 1 << 20, "", false},
		{"qcow2 extended l2 small cluster", buildQCOW2(qcow2Opts{size: 1 << 20, clusterBits: 12, incompat: qcow2IncompatExtendedL2}), FormatQCOW2, 1 << 20, "extended L2 needs clusters", false},
		{"qcow2 dirty is fine", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatDirty}), FormatQCOW2, 1 << 20, "", false},
		{"qcow2 backing", buildQCOW2(qcow2Opts{size: 1 << 20, backing: "x.qcow2"}), FormatQCOW2, 1 << 20, `qcow2 has a backing file "x.qcow2" (it would expose a host file)`, false},
		{"qcow2 v2 backing abs", buildQCOW2(qcow2Opts{version: 2, size: 1 << 20, backing: "/etc/shadow"}), FormatQCOW2, 1 << 20, `backing file "/etc/shadow"`, false},
		{"qcow2 backing json", buildQCOW2(qcow2Opts{size: 1 << 20, backing: `json:{"file.filename":"/etc/passwd"}`}), FormatQCOW2, 1 << 20, `backing file "json:`, false},
		{"qcow2 backing fmt ext", buildQCOW2(qcow2Opts{size: 1 << 20, backing: "b", exts: []qcow2Ext{{qcow2ExtBackingFmt, []byte("raw")}}}), FormatQCOW2, 1 << 20, `backing file "b"`, false},
		{"qcow2 data file", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatDataFile, exts: []qcow2Ext{{qcow2ExtDataFile, []byte("/dev/sda")}}}), FormatQCOW2, 1 << 20, `external data file "/dev/sda"`, false},
		{"qcow2 data file bit no name", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatDataFile}), FormatQCOW2, 1 << 20, "external data file", false},
		{"qcow2 data file name no bit", buildQCOW2(qcow2Opts{size: 1 << 20, exts: []qcow2Ext{{qcow2ExtDataFile, []byte("d.raw")}}}), FormatQCOW2, 1 << 20, `data file "d.raw" without`, false},
		{"qcow2 data file behind other ext", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatDataFile, exts: []qcow2Ext{{qcow2ExtFeatureTable, make([]byte, 48)}, {qcow2ExtDataFile, []byte("d")}}}), FormatQCOW2, 1 << 20, `external data file "d"`, false},
		{"qcow2 unknown incompat", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: 1 << 7}), FormatQCOW2, 1 << 20, "unknown incompatible features 0x80", false},
		{"qcow2 corrupt", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatCorrupt}), FormatQCOW2, 1 << 20, "marked corrupt", false},
		{"qcow2 zstd without bit", buildQCOW2(qcow2Opts{size: 1 << 20, compression: 1}), FormatQCOW2, 1 << 20, "compression type bit disagrees", false},
		{"qcow2 unknown compression", buildQCOW2(qcow2Opts{size: 1 << 20, incompat: qcow2IncompatCompression, compression: 9}), FormatQCOW2, 1 << 20, "compression type 9 is unknown", false},
		{"qcow2 version 4", buildQCOW2(qcow2Opts{version: 4, size: 1 << 20}), FormatQCOW2, 0, "qcow2 version 4 is not supported", false},
		{"qcow2 cluster bits 30", setU32(buildQCOW2(qcow2Opts{size: 1 << 20}), 20, 30), FormatQCOW2, 0, "cluster bits 30 out of range", false},
		{"qcow2 huge size", buildQCOW2(qcow2Opts{size: 1 << 63}), FormatQCOW2, 0, "too large", false},
		{"qcow2 header len > cluster", buildQCOW2(qcow2Opts{clusterBits: 9, size: 1 << 20, headerLen: 1024}), FormatQCOW2, 0, "header length 1024", false},
		{"qcow2 ext too large", setU32(buildQCOW2(qcow2Opts{size: 1 << 20, exts: []qcow2Ext{{0x1234, []byte("ab")}}}), 116, 1<<20), FormatQCOW2, 1 << 20, "extension 0x1234 is too large", false},
		{"qcow2 backing offset past cluster", setU32(setU32(buildQCOW2(qcow2Opts{size: 1 << 20}), 12, 1<<20), 16, 4), FormatQCOW2, 1 << 20, "outside the header cluster", false},
		{"qcow2 backing name too long", setU32(buildQCOW2(qcow2Opts{size: 1 << 20, backing: "x"}), 16, 2000), FormatQCOW2, 1 << 20, "name is too long", false},
		{"qcow2 truncated", buildQCOW2(qcow2Opts{})[:50], FormatQCOW2, 0, "truncated", false},
		{"qcow2 magic only", []byte(qcow2Magic), FormatQCOW2, 0, "truncated", false},
		{"qcow2 encrypted", buildQCOW2(qcow2Opts{size: 1 << 20, crypt: 2}), FormatQCOW2, 1 << 20, "", false},

		// vmdk
		{"vmdk sparse", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", sparseSelf), ""), FormatVMDK, 1 << 20, "", false},
		{"vmdk sparse zero extent", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", sparseSelf, "RW 100 ZERO"), ""), FormatVMDK, 1 << 20, "", false},
		{"vmdk sparse two sparse", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", sparseSelf, `RW 8 SPARSE "other.vmdk"`), ""), FormatVMDK, 1 << 20, `SPARSE "other.vmdk" names another file`, false},
		{"vmdk sparse self with path", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", `RW 2048 SPARSE "../x.vmdk"`), ""), FormatVMDK, 1 << 20, `SPARSE "../x.vmdk"`, false},
		{"vmdk sparse vmfs extent", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", sparseSelf, `RW 8 VMFS "/dev/sdb"`), ""), FormatVMDK, 1 << 20, `VMFS "/dev/sdb"`, false},
		{"vmdk sparse tab separated", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", sparseSelf, "RW\t8\tFLAT\t\"/etc/passwd\"\t0"), ""), FormatVMDK, 1 << 20, `FLAT "/etc/passwd"`, false},
		{"vmdk sparse crlf", buildVMDKSparse(1, 2048, strings.ReplaceAll(vmdkDesc("monolithicSparse", "", sparseSelf, `RW 8 FLAT "C:\x"`), "\n", "\r\n"), ""), FormatVMDK, 1 << 20, `FLAT "C:\\x"`, false},
		{"vmdk sparse parent", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "parentFileNameHint=\"/var/base.vmdk\"\n", sparseSelf), ""), FormatVMDK, 1 << 20, `parent file "/var/base.vmdk"`, false},
		{"vmdk sparse parent cid", buildVMDKSparse(1, 2048, strings.Replace(vmdkDesc("monolithicSparse", "", sparseSelf), "parentCID=ffffffff", "parentCID=1234", 1), ""), FormatVMDK, 1 << 20, "parent file", false},
		{"vmdk sparse bad extent", buildVMDKSparse(1, 2048, vmdkDesc("monolithicSparse", "", sparseSelf, "RW lots FLAT \"/x\""), ""), FormatVMDK, 1 << 20, "malformed extent line", false},
		{"vmdk sparse no descriptor", func() []byte {
			b := buildVMDKSparse(1, 2048, "", "")
			binary.LittleEndian.PutUint64(b[28:], 0)
			return b
		}(), FormatVMDK, 1 << 20, "no descriptor", false},
		{"vmdk version 4", buildVMDKSparse(4, 2048, vmdkDesc("monolithicSparse", "", sparseSelf), ""), FormatVMDK, 0, "vmdk version 4", false},
		{"vmdk huge capacity", buildVMDKSparse(1, 1<<62, vmdkDesc("monolithicSparse", "", sparseSelf), ""), FormatVMDK, 0, "capacity", false},
		{"vmdk footer", buildVMDKSparse(3, 512, vmdkDesc("streamOptimized", "", sparseSelf), vmdkDesc("streamOptimized", "", sparseSelf)), FormatVMDK, 512 * 512, "", false},
		{"vmdk footer evil", buildVMDKSparse(3, 512, vmdkDesc("streamOptimized", "", sparseSelf), vmdkDesc("streamOptimized", "", sparseSelf, `RW 16 FLAT "/etc/hostname" 0`)), FormatVMDK, 512 * 512, `FLAT "/etc/hostname"`, false},
		{"vmdk footer missing", buildVMDKSparse(3, 512, vmdkDesc("streamOptimized", "", sparseSelf), vmdkDesc("streamOptimized", "", sparseSelf))[:20000], FormatVMDK, 0, "footer is invalid", false},
		{"vmdk descriptor only flat", []byte(vmdkDesc("monolithicFlat", "", `RW 2048 FLAT "disk-flat.vmdk" 0`)), FormatVMDK, 1 << 20, `FLAT "disk-flat.vmdk"`, false},
		{"vmdk descriptor only zero", []byte(vmdkDesc("custom", "", "RW 2048 ZERO")), FormatVMDK, 1 << 20, "", false},
		{"vmdk descriptor only none", []byte(vmdkDesc("custom", "")), FormatVMDK, 0, "no extents", false},
		{"vmdk descriptor huge extents", []byte(vmdkDesc("custom", "", "RW 9223372036854775807 ZERO", "RW 9223372036854775807 ZERO")), FormatVMDK, 0, "more than 2^63", false},
		{"vmdk descriptor leading blank", []byte("  \n# c\nversion=2\r\nRW 8 FLAT \"/x\"\n"), FormatVMDK, 4096, `FLAT "/x"`, false},
		{"vmdk3 cowd", append([]byte(vmdk3Magic), make([]byte, 508)...), FormatVMDK, 0, "COWD", false},
		{"text not a descriptor", []byte("hello\nversion=1\n"), FormatRaw, 16, "", false},

		// vhd
		{"vhd fixed qem2", buildFixedVHD("qem2", 8192, 65535, 16, 255), FormatVHD, 8192, "", false},
		{"vhd fixed bad checksum is raw", func() []byte {
			b := buildFixedVHD("win ", 8192, 1, 1, 16)
			b[len(b)-1] ^= 1
			b[len(b)-512+64] ^= 1
			return b
		}(), FormatRaw, 8192 + 512, "", false},
		{"vhd footer at end dynamic type is raw", append(make([]byte, 4096), vhdFooter(vhdTypeDynamic, "qemu", 4096, 1, 1, 8, 512)...), FormatRaw, 4096 + 512, "", false},
		{"vhd fixed size beyond data", append(make([]byte, 4096), vhdFooter(vhdTypeFixed, "win ", 1<<30, 1, 1, 8, math1)...), FormatVHD, 1 << 30, "larger than the data", false},
		{"vhd dynamic", buildDynamicVHD(vhdTypeDynamic, 1<<20, ""), FormatVHD, 1 << 20, "", false},
		{"vhd differencing", buildDynamicVHD(vhdTypeDiff, 1<<20, `C:\base.vhd`), FormatVHD, 1 << 20, `differencing disk with parent "C:\\base.vhd"`, false},
		{"vhd dynamic bad header", func() []byte { b := buildDynamicVHD(vhdTypeDynamic, 1<<20, ""); b[600] ^= 1; return b }(), FormatVHD, 1 << 20, "dynamic header", false},
		{"vhd cookie bad checksum", func() []byte { b := buildDynamicVHD(vhdTypeDynamic, 1<<20, ""); b[40] ^= 1; return b }(), FormatVHD, 0, "checksum", false},

		// vhdx
		{"vhdx dynamic", buildVHDX(vhdxStdItems(3<<30, 32<<20, 0), false), FormatVHDX, 3 << 30, "", false},
		{"vhdx fixed", buildVHDX(vhdxStdItems(1<<20, 1<<20, 1), false), FormatVHDX, 1 << 20, "", false},
		{"vhdx has parent flag", buildVHDX(vhdxStdItems(1<<20, 1<<20, 2), false), FormatVHDX, 1 << 20, "differencing disk", false},
		{"vhdx parent locator", buildVHDX(append(vhdxStdItems(1<<20, 1<<20, 2), vhdxItem{vhdxMetaParent, vhdxLocator(`..\base.vhdx`), 4}), false), FormatVHDX, 1 << 20, `parent "..\\base.vhdx"`, false},
		{"vhdx unknown required item", buildVHDX(append(vhdxStdItems(1<<20, 1<<20, 0), vhdxItem{"11111111-2222-3333-4444-555555555555", []byte{1}, 4}), false), FormatVHDX, 1 << 20, "unknown required metadata item 11111111-2222-3333-4444-555555555555", false},
		{"vhdx unknown optional item", buildVHDX(append(vhdxStdItems(1<<20, 1<<20, 0), vhdxItem{"11111111-2222-3333-4444-555555555555", []byte{1}, 0}), false), FormatVHDX, 1 << 20, "", false},
		{"vhdx no size", buildVHDX(vhdxStdItems(1<<20, 1<<20, 0)[:1], false), FormatVHDX, 0, "no usable virtual disk size", false},
		{"vhdx size too big", buildVHDX(vhdxStdItems(1<<50, 1<<20, 0), false), FormatVHDX, 0, "virtual disk size", false},
		{"vhdx log", buildVHDX(vhdxStdItems(1<<20, 1<<20, 0), true), FormatVHDX, 1 << 20, "log that must be replayed", false},
		{"vhdx bad headers", func() []byte {
			b := buildVHDX(vhdxStdItems(1<<20, 1<<20, 0), false)
			b[vhdxHeader1+100] ^= 1
			b[vhdxHeader2+100] ^= 1
			return b
		}(), FormatVHDX, 0, "no valid header", false},
		{"vhdx one bad region table", func() []byte { b := buildVHDX(vhdxStdItems(1<<20, 1<<20, 0), false); b[vhdxRegion1+100] ^= 1; return b }(), FormatVHDX, 1 << 20, "", false},
		{"vhdx truncated", buildVHDX(vhdxStdItems(1<<20, 1<<20, 0), false)[:300<<10], FormatVHDX, 0, "metadata region", false},

		// vdi
		{"vdi dynamic", buildVDI(vdiVersion11, vdiTypeDynamic, 3<<30, 1<<20, false), FormatVDI, 3 << 30, "", false},
		{"vdi static", buildVDI(vdiVersion11, vdiTypeStatic, 1<<20, 1<<20, false), FormatVDI, 1 << 20, "", false},
		{"vdi diff", buildVDI(vdiVersion11, vdiTypeDiff, 1<<20, 1<<20, true), FormatVDI, 1 << 20, "differencing", false},
		{"vdi parent uuid", buildVDI(vdiVersion11, vdiTypeDynamic, 1<<20, 1<<20, true), FormatVDI, 1 << 20, "parent", false},
		{"vdi version 1.0", buildVDI(0x00010000, vdiTypeDynamic, 1<<20, 1<<20, false), FormatVDI, 0, "version 0x10000", false},
		{"vdi bad block", buildVDI(vdiVersion11, vdiTypeDynamic, 1<<20, 3, false), FormatVDI, 1 << 20, "block size 3", false},
		{"vdi truncated", buildVDI(vdiVersion11, vdiTypeDynamic, 1<<20, 1<<20, false)[:0x100], FormatVDI, 0, "truncated", false},

		// iso
		{"iso plain", buildISO(nil, isoPrimary, 40), FormatISO, 40 * 2048, "", false},
		{"iso boot record first", buildISO(nil, 0, 40), FormatISO, 40 * 2048, "", false},
		{"iso hybrid mbr", buildISO(append(make([]byte, 510), 0x55, 0xaa), isoPrimary, 40), FormatISO, 40 * 2048, "", false},
		{"iso bad type is raw", buildISO(nil, 7, 40), FormatRaw, 40 * 2048, "", false},
		{"iso with qcow2 header", buildISO(buildQCOW2(qcow2Opts{clusterBits: 9, size: 1 << 20})[:1024], isoPrimary, 40), FormatQCOW2, 1 << 20, "both qcow2 and an ISO 9660 image", true},
		{"iso with vmdk header", buildISO([]byte(vmdkMagic), isoPrimary, 40), FormatVMDK, 0, "both vmdk and an ISO", true},
		{"iso with vhdx header", buildISO([]byte(vhdxSignature), isoPrimary, 40), FormatVHDX, 0, "both vhdx and an ISO", true},
		{"iso with fixed vhd footer", append(buildISO(nil, isoPrimary, 40), vhdFooter(vhdTypeFixed, "win ", 40*2048, 1, 1, 1, math1)...), FormatVHD, 40 * 2048, "both vhd and an ISO", true},
		{"iso with luks", buildISO([]byte(luksMagic), isoPrimary, 40), FormatLUKS, 0, "LUKS", true},

		// others qemu would probe
		{"qed", append([]byte(qedMagic), make([]byte, 100)...), FormatQED, 0, "qed images are not supported", false},
		{"luks", append([]byte(luksMagic), make([]byte, 100)...), FormatLUKS, 0, "LUKS", false},
		{"parallels", []byte("WithoutFreeSpace\x02\x00"), FormatParallels, 0, "Parallels", false},
		{"bochs", []byte(bochsMagic + "\x00Redolog"), FormatBochs, 0, "Bochs", false},
		{"cloop", []byte(cloopMagic), FormatCloop, 0, "cloop", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := detectBytes(t, tt.data)
			if res.Format != tt.format || res.VirtualSize != tt.size {
				t.Errorf("got %s %d, want %s %d (unsafe %q)", res.Format, res.VirtualSize, tt.format, tt.size, res.Unsafe)
			}
			checkSafety(t, res, safety{reason: tt.reason, ambiguous: tt.ambig})
			checkInvariants(t, tt.data, res)
		})
	}
}

func TestDetectDetails(t *testing.T) {
	res := detectBytes(t, buildQCOW2(qcow2Opts{size: 1 << 20, backing: "b.qcow2", incompat: qcow2IncompatCompression | qcow2IncompatExtendedL2, compression: 1, exts: []qcow2Ext{{qcow2ExtBackingFmt, []byte("qcow2")}}}))
	want := Details{Version: 3, ClusterSize: 65536, Compression: "zstd", ExtendedL2: true, BackingFile: "b.qcow2", BackingFormat: "qcow2"}
	if fmt.Sprint(res.Details) != fmt.Sprint(want) {
		t.Errorf("qcow2 details = %+v, want %+v", res.Details, want)
	}
	res = detectBytes(t, buildVMDKSparse(3, 512, vmdkDesc("streamOptimized", "", `RW 512 SPARSE "s.vmdk"`), vmdkDesc("streamOptimized", "", `RW 512 SPARSE "s.vmdk"`)))
	if d := res.Details; d.Subformat != "streamOptimized" || d.Compression != "deflate" || d.ClusterSize != 65536 || d.Version != 3 ||
		len(d.Extents) != 1 || d.Extents[0] != (VMDKExtent{"RW", 512, "SPARSE", "s.vmdk"}) {
		t.Errorf("vmdk details = %+v", d)
	}
	res = detectBytes(t, buildFixedVHD("vpc ", 266240, 7, 4, 17))
	if d := res.Details; d.Subformat != SubformatFixed || d.CreatorApp != "vpc " || d.QemuVirtualSize != 7*4*17*512 || res.VirtualSize != 266240 {
		t.Errorf("vhd details = %+v, size %d", d, res.VirtualSize)
	}
	res = detectBytes(t, buildISO(append(append(make([]byte, 512), "EFI PART"...), make([]byte, 100)...), isoPrimary, 30))
	if d := res.Details; d.PartitionTable != "gpt" || d.ISOVolumeSize != 30*2048 {
		t.Errorf("iso details = %+v", d)
	}
}

func TestParseVMDKExtent(t *testing.T) {
	tests := []struct {
		line string
		want VMDKExtent
		ok   bool
	}{
		{`RW 16 FLAT "/etc/hostname" 0`, VMDKExtent{"RW", 16, "FLAT", "/etc/hostname"}, true},
		{`RDONLY 8 SPARSE "a b.vmdk"`, VMDKExtent{"RDONLY", 8, "SPARSE", "a b.vmdk"}, true},
		{"NOACCESS 8 ZERO", VMDKExtent{"NOACCESS", 8, "ZERO", ""}, true},
		{`RW 8 FLAT unquoted.vmdk 0`, VMDKExtent{}, false},
		{`RW 8 FLAT "unterminated`, VMDKExtent{}, false},
		{`RW 8 FLAT`, VMDKExtent{}, false},
		{`RW 8 ZERO junk`, VMDKExtent{}, false},
		{`RW 8 FLAT ""`, VMDKExtent{"RW", 8, "FLAT", ""}, true},
		{"RW 8", VMDKExtent{}, false},
		{"RW -1 ZERO", VMDKExtent{}, false},
		{"RW 99999999999999999999 ZERO", VMDKExtent{}, false},
	}
	for _, tt := range tests {
		access, rest := cutField(tt.line)
		got, ok := parseVMDKExtent(access, rest)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("%q: got %+v %v, want %+v %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestIsVMDKDescriptor(t *testing.T) {
	tests := []struct {
		text string
		want bool
	}{
		{"# Disk DescriptorFile\nversion=1\n", true},
		{"version=3\r\n", true},
		{"\n# x\n   \nversion=2\n", false}, // qemu: a bare newline is not a blank line it skips
		{"   \r\nversion=1\n", true},
		{"# only a comment", false},
		{"version=4\n", false},
		{"version=1", false},
		{"xversion=1\n", false},
	}
	for _, tt := range tests {
		if got := isVMDKDescriptor([]byte(tt.text)); got != tt.want {
			t.Errorf("%q: got %v, want %v", tt.text, got, tt.want)
		}
	}
}

// errReader fails every read.
type errReader struct{ err error }

func (e errReader) ReadAt([]byte, int64) (int, error) { return 0, e.err }

func TestDetectReadErrors(t *testing.T) {
	boom := errors.New("boom")
	if _, err := Detect(errReader{boom}, 4096); !errors.Is(err, boom) || !strings.Contains(err.Error(), "inspect: read 4096 bytes at 0") {
		t.Errorf("read error: got %v", err)
	}
	// The source is shorter than the size it claims.
	if _, err := Detect(bytes.NewReader(make([]byte, 100)), 1000); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short source: got %v", err)
	}
	if _, err := Detect(bytes.NewReader(nil), -1); err == nil {
		t.Error("negative size: no error")
	}
	// A failure after the first read is reported too (ISO probe).
	fail := &failAfter{data: make([]byte, 1<<20), n: 1, err: boom}
	if _, err := Detect(fail, 1<<20); !errors.Is(err, boom) {
		t.Errorf("second read error: got %v", err)
	}
}

type failAfter struct {
	data []byte
	n    int
	err  error
}

func (f *failAfter) ReadAt(p []byte, off int64) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	f.n--
	return bytes.NewReader(f.data).ReadAt(p, off)
}

func TestSafeError(t *testing.T) {
	if err := (Result{Format: FormatRaw}).Safe(); err != nil {
		t.Errorf("safe result: %v", err)
	}
	r := Result{Format: FormatQCOW2, Unsafe: []string{`qcow2 has a backing file "x.qcow2" (it would expose a host file)`}}
	err := r.Safe()
	want := `inspect: qcow2 has a backing file "x.qcow2" (it would expose a host file): refused`
	if err == nil || err.Error() != want {
		t.Errorf("Safe() = %v, want %s", err, want)
	}
	if !errors.Is(err, ErrUnsafe) || errors.Is(err, ErrAmbiguous) {
		t.Errorf("errors.Is mismatch for %v", err)
	}
	r = Result{Format: FormatISO, Ambiguous: true, Candidates: []string{"qcow2", "iso"}}
	if err := r.Safe(); err == nil || !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "qcow2, iso") {
		t.Errorf("ambiguous without reasons: %v", err)
	}
	// The error owns its reasons.
	r.Unsafe = []string{"a"}
	ue := r.Safe().(*UnsafeError)
	r.Unsafe[0] = "b"
	if ue.Reasons[0] != "a" {
		t.Error("UnsafeError shares the Result's slice")
	}
}

// TestReadBounds feeds images whose headers point far away or claim huge
// tables and checks that Detect reads little and allocates little.
func TestReadBounds(t *testing.T) {
	huge := func(b []byte, size int64) *sparseImage { return &sparseImage{head: b, size: size} }
	tests := []struct {
		name string
		img  *sparseImage
	}{
		{"vmdk descriptor 2^40 sectors", huge(func() []byte {
			b := buildVMDKSparse(1, 2048, "", "")
			binary.LittleEndian.PutUint64(b[36:], 1<<40)
			return b
		}(), 1<<50)},
		{"qcow2 2 MiB cluster", huge(buildQCOW2(qcow2Opts{clusterBits: 21, size: 1 << 40})[:4096], 1<<50)},
		{"descriptor-only 1 TiB", huge([]byte("# Disk DescriptorFile\nversion=1\n"), 1<<40)},
		{"vhdx huge metadata region", huge(buildVHDX(vhdxStdItems(1<<20, 1<<20, 0), false), 1<<50)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Detect(tt.img, tt.img.size); err != nil {
				t.Fatal(err)
			}
			if tt.img.total > maxTotalRead || tt.img.max > maxOneRead {
				t.Errorf("read %d bytes in all, %d at once", tt.img.total, tt.img.max)
			}
		})
	}
}

// sparseImage is a huge image of zeros with head at the start.
type sparseImage struct {
	head       []byte
	size       int64
	total, max int64
}

func (s *sparseImage) ReadAt(p []byte, off int64) (int, error) {
	s.total += int64(len(p))
	s.max = max(s.max, int64(len(p)))
	clear(p)
	if off < int64(len(s.head)) {
		copy(p, s.head[off:])
	}
	if off+int64(len(p)) > s.size {
		return int(max(0, s.size-off)), io.EOF
	}
	return len(p), nil
}

// checkInvariants holds for every input; the fuzzers use it too.
func checkInvariants(t *testing.T, data []byte, res Result) {
	t.Helper()
	known := []string{FormatRaw, FormatQCOW2, FormatVMDK, FormatVHD, FormatVHDX, FormatVDI, FormatISO,
		FormatQED, FormatLUKS, FormatParallels, FormatBochs, FormatCloop}
	found := false
	for _, k := range known {
		found = found || res.Format == k
	}
	if !found {
		t.Errorf("unknown format %q", res.Format)
	}
	if res.VirtualSize < 0 {
		t.Errorf("negative virtual size %d", res.VirtualSize)
	}
	if len(res.Candidates) == 0 || res.Candidates[0] != res.Format {
		t.Errorf("candidates %v do not start with %s", res.Candidates, res.Format)
	}
	if res.Ambiguous != (len(res.Candidates) > 1) {
		t.Errorf("ambiguous %v with candidates %v", res.Ambiguous, res.Candidates)
	}
	if (res.Safe() == nil) != (len(res.Unsafe) == 0 && !res.Ambiguous) {
		t.Errorf("Safe() = %v with unsafe %q ambiguous %v", res.Safe(), res.Unsafe, res.Ambiguous)
	}
	if len(res.Unsafe) > maxReasons {
		t.Errorf("%d reasons", len(res.Unsafe))
	}
	if (res.Format == FormatRaw || res.Format == FormatISO) && (res.VirtualSize != int64(len(data)) || len(res.Unsafe) != 0) {
		t.Errorf("%s: size %d of %d, unsafe %q", res.Format, res.VirtualSize, len(data), res.Unsafe)
	}
}

func TestReaderAtFuncAndJSON(t *testing.T) {
	img := buildQCOW2(qcow2Opts{size: 1 << 20, backing: "b"})
	calls := 0
	r := ReaderAtFunc(func(p []byte, off int64) (int, error) {
		calls++
		return bytes.NewReader(img).ReadAt(p, off)
	})
	res, err := Detect(r, int64(len(img)))
	if err != nil || res.Format != FormatQCOW2 || calls == 0 {
		t.Fatalf("Detect via ReaderAtFunc: %+v, %v, %d calls", res, err, calls)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"format":"qcow2","virtual_size":1048576,"details":{"version":3,"cluster_size":65536,"compression":"zlib","backing_file":"b"},` +
		`"unsafe":["qcow2 has a backing file \"b\" (it would expose a host file)"],"candidates":["qcow2"]}`
	if string(b) != want {
		t.Errorf("JSON:\n got %s\nwant %s", b, want)
	}
}
