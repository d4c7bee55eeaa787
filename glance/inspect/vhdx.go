package inspect

import (
	"fmt"
	"hash/crc32"
	"strings"
)

// VHDX layout ([MS-VHDX]), little-endian. Both headers and both region
// tables carry CRC-32C checksums.
const (
	vhdxSignature      = "vhdxfile"
	vhdxHeader1        = 64 << 10
	vhdxHeader2        = 128 << 10
	vhdxHeaderSize     = 4 << 10
	vhdxRegion1        = 192 << 10
	vhdxRegion2        = 256 << 10
	vhdxRegionSize     = 64 << 10
	vhdxMetaTableSize  = 64 << 10
	vhdxMaxEntries     = 2047
	vhdxMaxSize        = 64 << 40 // 64 TiB, the format's limit
	vhdxMaxLocator     = 64 << 10
	vhdxMaxLocatorKeys = 256

	vhdxRegionBAT      = "2DC27766-F623-4200-9D64-115E9BFD4A08"
	vhdxRegionMetadata = "8B7CA206-4790-4B9A-B8FE-575F050F886E"
	vhdxMetaFileParams = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B"
	vhdxMetaDiskSize   = "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
	vhdxMetaPage83     = "BECA12AB-B2E6-4523-93EF-C309E000C746"
	vhdxMetaLogical    = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F"
	vhdxMetaPhysical   = "CDA348C7-445D-4471-9CC9-E9885251C556"
	vhdxMetaParent     = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"
)

func isVHDX(head []byte) bool { return hasAt(head, 0, vhdxSignature) }

// guidString formats a GUID stored in Microsoft's mixed-endian layout.
func guidString(b []byte) string {
	if len(b) < 16 {
		return ""
	}
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le32(b, 0), le16(b, 4), le16(b, 6), b[8:10], b[10:16])
}

// vhdxCRCValid checks a CRC-32C stored at offset 4 of b.
func vhdxCRCValid(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	want := le32(b, 4)
	c := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	c.Write(b[:4])
	c.Write([]byte{0, 0, 0, 0})
	c.Write(b[8:])
	return c.Sum32() == want
}

func parseVHDX(rd *reader, _ []byte, res *Result) error {
	// The current header is the valid one with the higher sequence number.
	var cur []byte
	for _, off := range []int64{vhdxHeader1, vhdxHeader2} {
		h, full, err := rd.readFull(off, vhdxHeaderSize)
		if err != nil {
			return err
		}
		if full && hasAt(h, 0, "head") && vhdxCRCValid(h) && (cur == nil || le64(h, 8) > le64(cur, 8)) {
			cur = h
		}
	}
	if cur == nil {
		res.unsafe("vhdx has no valid header")
		return nil
	}
	res.Details.Version = uint32(le16(cur, 66))
	if !allZero(cur[48:64]) {
		// qemu refuses a read-only open until the log is replayed, and the
		// replay may change the metadata we would report.
		res.unsafe("vhdx has a log that must be replayed first")
	}

	var regions []byte
	for _, off := range []int64{vhdxRegion1, vhdxRegion2} {
		t, full, err := rd.readFull(off, vhdxRegionSize)
		if err != nil {
			return err
		}
		if full && hasAt(t, 0, "regi") && vhdxCRCValid(t) && le32(t, 8) <= vhdxMaxEntries {
			regions = t
			break
		}
	}
	if regions == nil {
		res.unsafe("vhdx has no valid region table")
		return nil
	}
	var metaOff, metaLen uint64
	for i := range int(le32(regions, 8)) {
		e := regions[16+32*i : 16+32*(i+1)]
		switch id := guidString(e); id {
		case vhdxRegionMetadata:
			metaOff, metaLen = le64(e, 16), uint64(le32(e, 24))
		case vhdxRegionBAT:
		default:
			if le32(e, 28)&1 != 0 {
				res.unsafe("vhdx has an unknown required region %s", id)
			}
		}
	}
	if metaOff == 0 || metaLen < vhdxMetaTableSize || metaOff > uint64(rd.size) || metaLen > uint64(rd.size)-metaOff {
		res.unsafe("vhdx metadata region is missing or outside the image")
		return nil
	}
	return parseVHDXMetadata(rd, int64(metaOff), int64(metaLen), res)
}

// parseVHDXMetadata reads the metadata table and the items we need.
func parseVHDXMetadata(rd *reader, off, length int64, res *Result) error {
	t, err := rd.read(off, vhdxMetaTableSize)
	if err != nil {
		return err
	}
	if !hasAt(t, 0, "metadata") || le16(t, 10) > vhdxMaxEntries {
		res.unsafe("vhdx metadata table is invalid")
		return nil
	}
	item := func(e []byte, n int) ([]byte, error) {
		o, l := int64(le32(e, 16)), int64(le32(e, 20))
		if l < int64(n) || o < vhdxMetaTableSize || o > length-int64(n) {
			res.unsafe("vhdx metadata item %s lies outside its region", guidString(e))
			return nil, nil
		}
		b, full, err := rd.readFull(off+o, n)
		if err != nil {
			return nil, err
		}
		if !full {
			res.unsafe("vhdx metadata item %s lies past the end of the image", guidString(e))
			return nil, nil
		}
		return b, nil
	}
	haveSize := false
	for i := range int(le16(t, 10)) {
		e := t[32+32*i : 32+32*(i+1)]
		id := guidString(e)
		switch id {
		case vhdxMetaDiskSize:
			b, err := item(e, 8)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			size := le64(b, 0)
			if size == 0 || size > vhdxMaxSize {
				res.unsafe("vhdx virtual disk size %d is invalid", size)
				continue
			}
			res.VirtualSize, haveSize = int64(size), true
		case vhdxMetaFileParams:
			b, err := item(e, 8)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			res.Details.ClusterSize = int64(le32(b, 0))
			flags := le32(b, 4)
			res.Details.Subformat = SubformatDynamic
			if flags&1 != 0 {
				res.Details.Subformat = SubformatFixed
			}
			if flags&2 != 0 {
				res.Details.Subformat = SubformatDifferencing
			}
		case vhdxMetaParent:
			res.Details.Subformat = SubformatDifferencing
			n := min(int64(le32(e, 20)), vhdxMaxLocator)
			b, err := item(e, int(n))
			if err != nil {
				return err
			}
			res.Details.BackingFile = vhdxParentPath(b)
		case vhdxMetaPage83, vhdxMetaLogical, vhdxMetaPhysical:
		default:
			if le32(e, 24)&4 != 0 {
				res.unsafe("vhdx has an unknown required metadata item %s", id)
			}
		}
	}
	if !haveSize {
		res.VirtualSize = 0
		res.unsafe("vhdx has no usable virtual disk size")
	}
	if res.Details.Subformat == SubformatDifferencing {
		res.unsafe("vhdx is a differencing disk with parent %q (it would expose a host file)", res.Details.BackingFile)
	}
	return nil
}

// vhdxParentPath picks a path out of a parent locator's key/value table.
func vhdxParentPath(b []byte) string {
	n := int(le16(b, 18))
	if n > vhdxMaxLocatorKeys {
		n = vhdxMaxLocatorKeys
	}
	str := func(off uint32, l uint16) string {
		if int64(off)+int64(l) > int64(len(b)) {
			return ""
		}
		return utf16String(b[off:off+uint32(l)], false)
	}
	var found string
	for i := range n {
		e := b[min(len(b), 20+12*i):min(len(b), 20+12*(i+1))]
		if len(e) < 12 {
			break
		}
		key := str(le32(e, 0), le16(e, 8))
		val := str(le32(e, 4), le16(e, 10))
		switch strings.ToLower(key) {
		case "relative_path", "absolute_win32_path", "volume_path":
			if found == "" {
				found = val
			}
		}
	}
	return found
}
