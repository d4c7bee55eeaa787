package inspect

import "math"

// VirtualBox VDI header, little-endian: a 64-byte text, the signature at
// 0x40, then the 1.1 header (what qemu's vdi driver reads).
const (
	vdiSignature    = 0xbeda107f
	vdiVersion11    = 0x00010001
	vdiHeaderEnd    = 0x1c8 // through the parent UUIDs
	vdiTypeDynamic  = 1
	vdiTypeStatic   = 2
	vdiTypeDiff     = 4
	vdiMaxBlockSize = 1 << 30
)

func isVDI(head []byte) bool { return le32(head, 0x40) == vdiSignature }

func parseVDI(_ *reader, head []byte, res *Result) error {
	h := head
	if len(h) < vdiHeaderEnd {
		res.unsafe("vdi header is truncated (%d bytes)", len(h))
		return nil
	}
	res.Details.Version = le32(h, 0x44)
	if res.Details.Version != vdiVersion11 {
		res.unsafe("vdi version %#x is not supported", res.Details.Version)
		return nil
	}
	switch typ := le32(h, 0x4c); typ {
	case vdiTypeDynamic:
		res.Details.Subformat = SubformatDynamic
	case vdiTypeStatic:
		res.Details.Subformat = SubformatFixed
	case vdiTypeDiff:
		res.Details.Subformat = SubformatDifferencing
		res.unsafe("vdi is a differencing image (it would need a parent file)")
	default:
		res.unsafe("vdi image type %d is not supported", typ)
	}
	// A parent ("linkage") UUID also means a differencing image.
	if res.Details.Subformat != SubformatDifferencing && !allZero(h[0x1a8:0x1b8]) {
		res.unsafe("vdi names a parent image (it would need a parent file)")
	}
	size := le64(h, 0x170)
	if size > math.MaxInt64 {
		res.unsafe("vdi disk size %d is too large", size)
		return nil
	}
	res.VirtualSize = int64(size)
	block := le32(h, 0x178)
	if block == 0 || block > vdiMaxBlockSize || block&(block-1) != 0 {
		res.unsafe("vdi block size %d is invalid", block)
	}
	res.Details.ClusterSize = int64(block)
	return nil
}
