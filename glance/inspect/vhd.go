package inspect

import "strings"

// VHD footer and dynamic header (Microsoft "Virtual Hard Disk Image Format
// Specification"), big-endian.
const (
	vhdCookie        = "conectix"
	vhdDynCookie     = "cxsparse"
	vhdFooterSize    = 512
	vhdDynHeaderSize = 1024
	vhdTypeFixed     = 2
	vhdTypeDynamic   = 3
	vhdTypeDiff      = 4
	vhdMaxGeometry   = 65535 * 16 * 255 // qemu: then current_size wins
)

func isVHD(head []byte) bool { return hasAt(head, 0, vhdCookie) }

// vhdChecksum is the ones' complement of the byte sum, checksum field zeroed.
func vhdChecksum(f []byte, skip int) uint32 {
	var sum uint32
	for i, c := range f {
		if i >= skip && i < skip+4 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

func validVHDFooter(f []byte) bool {
	return len(f) == vhdFooterSize && hasAt(f, 0, vhdCookie) && be32(f, 64) == vhdChecksum(f, 64)
}

// parseVHD handles a VHD with its footer copy at offset 0 (dynamic and
// differencing disks; qemu probes these).
func parseVHD(rd *reader, head []byte, res *Result) error {
	f := head[:min(len(head), vhdFooterSize)]
	if !validVHDFooter(f) {
		res.unsafe("vhd footer checksum is wrong")
		return nil
	}
	applyVHDFooter(f, res)
	switch typ := be32(f, 60); typ {
	case vhdTypeFixed:
		// A fixed disk's data starts at 0, so a footer there is odd but
		// harmless; qemu accepts it.
	case vhdTypeDynamic, vhdTypeDiff:
		return parseVHDDynamic(rd, f, typ, res)
	default:
		res.unsafe("vhd disk type %d is not supported", typ)
	}
	return nil
}

// parseFixedVHD looks for a fixed VHD: its only header is the footer in
// the last 512 bytes. The checksum must hold and the type must be fixed,
// so a raw disk that merely ends in "conectix" stays raw.
func parseFixedVHD(rd *reader, res *Result) (bool, error) {
	if rd.size < 2*vhdFooterSize {
		return false, nil
	}
	f, full, err := rd.readFull(rd.size-vhdFooterSize, vhdFooterSize)
	if err != nil || !full {
		return false, err
	}
	if !validVHDFooter(f) || be32(f, 60) != vhdTypeFixed {
		return false, nil
	}
	res.Format = FormatVHD
	applyVHDFooter(f, res)
	if res.VirtualSize > rd.size-vhdFooterSize {
		res.unsafe("vhd current size %d is larger than the data in the file (%d)", res.VirtualSize, rd.size-vhdFooterSize)
	}
	return true, nil
}

// applyVHDFooter fills the size and details from a valid footer.
func applyVHDFooter(f []byte, res *Result) {
	res.Details.Version = be32(f, 12)
	res.Details.CreatorApp = string(f[28:32])
	switch be32(f, 60) {
	case vhdTypeFixed:
		res.Details.Subformat = SubformatFixed
	case vhdTypeDynamic:
		res.Details.Subformat = SubformatDynamic
	case vhdTypeDiff:
		res.Details.Subformat = SubformatDifferencing
	}
	cur := be64(f, 48)
	if cur > 1<<62 {
		res.unsafe("vhd current size %d is too large", cur)
		return
	}
	res.VirtualSize = int64(cur)
	res.Details.QemuVirtualSize = qemuVHDSize(f)
}

// qemuVHDSize repeats qemu's vpc_open choice between CHS geometry and
// current_size, which depends on the creator application.
func qemuVHDSize(f []byte) int64 {
	chs := int64(be16(f, 56)) * int64(f[58]) * int64(f[59])
	useCHS := true
	switch string(f[28:32]) {
	case "win ", "qem2", "d2v ", "CTXS", "tap\x00":
		useCHS = false
	}
	if !useCHS || chs == vhdMaxGeometry {
		return int64(be64(f, 48))
	}
	return chs * 512
}

// parseVHDDynamic checks the dynamic header a footer points at and, for a
// differencing disk, reports the parent.
func parseVHDDynamic(rd *reader, f []byte, typ uint32, res *Result) error {
	off := be64(f, 16)
	if off > uint64(rd.size) {
		res.unsafe("vhd dynamic header offset %d is outside the image", off)
		return nil
	}
	h, full, err := rd.readFull(int64(off), vhdDynHeaderSize)
	if err != nil {
		return err
	}
	if !full || !hasAt(h, 0, vhdDynCookie) || be32(h, 36) != vhdChecksum(h, 36) {
		res.unsafe("vhd dynamic header is missing or its checksum is wrong")
		return nil
	}
	res.Details.ClusterSize = int64(be32(h, 32))
	if typ == vhdTypeDiff {
		res.Details.BackingFile = utf16String(h[64:576], true)
		res.unsafe("vhd is a differencing disk with parent %q (it would expose a host file)", res.Details.BackingFile)
	}
	return nil
}

// utf16String decodes a NUL-terminated UTF-16 name (BMP only; others
// become U+FFFD), enough to name a parent in a message.
func utf16String(b []byte, bigEndian bool) string {
	var sb strings.Builder
	for i := 0; i+1 < len(b); i += 2 {
		u := le16(b, i)
		if bigEndian {
			u = be16(b, i)
		}
		if u == 0 {
			break
		}
		if u >= 0xd800 && u < 0xe000 {
			u = 0xfffd
		}
		sb.WriteRune(rune(u))
	}
	return sb.String()
}
