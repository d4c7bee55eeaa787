package inspect

import "math"

// qcow2 header layout (docs/interop/qcow2.txt in qemu), big-endian.
const (
	qcow2Magic           = "QFI\xfb"
	qcow2V2HeaderLen     = 72
	qcow2V3MinHeaderLen  = 104
	qcow2MinClusterBits  = 9
	qcow2MaxClusterBits  = 21
	qcow2MaxBackingName  = 1023 // qemu refuses longer names
	qcow2MaxRefcountOrd  = 6
	qcow2ExtEnd          = 0x00000000
	qcow2ExtBackingFmt   = 0xe2792aca
	qcow2ExtFeatureTable = 0x6803f857
	qcow2ExtDataFile     = 0x44415441
	qcow2ExtCrypto       = 0x0537be77

	qcow2IncompatDirty       = 1 << 0
	qcow2IncompatCorrupt     = 1 << 1
	qcow2IncompatDataFile    = 1 << 2
	qcow2IncompatCompression = 1 << 3
	qcow2IncompatExtendedL2  = 1 << 4
	qcow2IncompatKnown       = 1<<5 - 1

	// Header extensions live in the first cluster; we look at no more than
	// this much of it. A walk that does not end inside is reported unsafe.
	qcow2MaxExtArea = 256 << 10
)

func isQCOW2(head []byte) bool { return hasAt(head, 0, qcow2Magic) }

// parseQCOW2 reads the header, the backing file name and the header
// extensions, mirroring the checks qemu makes when it opens the image.
func parseQCOW2(rd *reader, head []byte, res *Result) error {
	h := head
	if len(h) < qcow2V2HeaderLen {
		res.unsafe("qcow2 header is truncated (%d bytes)", len(h))
		return nil
	}
	version := be32(h, 4)
	res.Details.Version = version
	if version != 2 && version != 3 {
		res.unsafe("qcow2 version %d is not supported", version)
		return nil
	}
	clusterBits := be32(h, 20)
	if clusterBits < qcow2MinClusterBits || clusterBits > qcow2MaxClusterBits {
		res.unsafe("qcow2 cluster bits %d out of range", clusterBits)
		return nil
	}
	clusterSize := int64(1) << clusterBits
	res.Details.ClusterSize = clusterSize
	vsize := be64(h, 24)
	if vsize > math.MaxInt64 {
		res.unsafe("qcow2 virtual size %d is too large", vsize)
		return nil
	}
	if be32(h, 32) != 0 {
		res.Details.Encrypted = true
	}

	headerLen := uint32(qcow2V2HeaderLen)
	var incompat uint64
	compression := "zlib"
	if version == 3 {
		if len(h) < qcow2V3MinHeaderLen {
			res.unsafe("qcow2 v3 header is truncated (%d bytes)", len(h))
			return nil
		}
		incompat = be64(h, 72)
		refcountOrder := be32(h, 96)
		headerLen = be32(h, 100)
		if headerLen < qcow2V3MinHeaderLen || int64(headerLen) > clusterSize {
			res.unsafe("qcow2 header length %d is invalid", headerLen)
			return nil
		}
		if refcountOrder > qcow2MaxRefcountOrd {
			res.unsafe("qcow2 refcount order %d is invalid", refcountOrder)
		}
		if headerLen > qcow2V3MinHeaderLen {
			switch ct := byteAt(h, 104); ct {
			case 0:
			case 1:
				compression = "zstd"
			default:
				res.unsafe("qcow2 compression type %d is unknown", ct)
			}
		}
		if (compression != "zlib") != (incompat&qcow2IncompatCompression != 0) {
			res.unsafe("qcow2 compression type bit disagrees with compression type %s", compression)
		}
		if unknown := incompat &^ qcow2IncompatKnown; unknown != 0 {
			res.unsafe("qcow2 has unknown incompatible features %#x", unknown)
		}
		if incompat&qcow2IncompatCorrupt != 0 {
			res.unsafe("qcow2 is marked corrupt")
		}
		if incompat&qcow2IncompatExtendedL2 != 0 {
			res.Details.ExtendedL2 = true
			if clusterBits < 14 {
				res.unsafe("qcow2 extended L2 needs clusters of at least 16 KiB, has %d", clusterSize)
			}
		}
	}
	res.Details.Compression = compression
	res.VirtualSize = int64(vsize)

	// Everything else sits in the first cluster; read what we need of it.
	area := clusterSize
	if area > qcow2MaxExtArea {
		area = qcow2MaxExtArea
	}
	cl, err := rd.read(0, int(area))
	if err != nil {
		return err
	}

	backingOff := be64(h, 8)
	backingLen := be32(h, 16)
	extEnd := clusterSize
	if backingOff != 0 {
		if backingOff > uint64(clusterSize) {
			res.unsafe("qcow2 backing file offset %d is outside the header cluster", backingOff)
		} else if backingLen > qcow2MaxBackingName || uint64(backingLen) > uint64(clusterSize)-backingOff {
			res.unsafe("qcow2 backing file name is too long (%d bytes)", backingLen)
		} else if backingLen > 0 {
			name, full, err := rd.readFull(int64(backingOff), int(backingLen))
			if err != nil {
				return err
			}
			if !full {
				res.unsafe("qcow2 backing file name lies past the end of the image")
			}
			res.Details.BackingFile = string(name)
			res.unsafe("qcow2 has a backing file %q (it would expose a host file)", name)
		}
		if backingOff < uint64(extEnd) {
			extEnd = int64(backingOff)
		}
	}
	walkQCOW2Extensions(cl, int64(headerLen), extEnd, area, res)

	if incompat&qcow2IncompatDataFile != 0 {
		name := res.Details.DataFile
		if name == "" {
			name = "(name given at open time)"
		}
		res.unsafe("qcow2 has an external data file %q (it would expose a host file)", name)
	} else if res.Details.DataFile != "" {
		res.unsafe("qcow2 names an external data file %q without the data-file feature", res.Details.DataFile)
	}
	return nil
}

// walkQCOW2Extensions parses the header extensions from off up to end, as
// qemu does. b holds the first bytes of the image (fewer than end when the
// image or our read cap ends first); bytes past the image read as zeros,
// which ends the walk, like qemu's reads past EOF.
func walkQCOW2Extensions(b []byte, off, end, readCap int64, res *Result) {
	for off < end {
		if off >= readCap {
			res.unsafe("qcow2 header extensions run past the inspection limit")
			return
		}
		typ := be32(b, int(off))
		n := int64(be32(b, int(off)+4))
		off += 8
		if off > end || n > end-off {
			res.unsafe("qcow2 header extension %#x is too large (%d bytes)", typ, n)
			return
		}
		if typ == qcow2ExtEnd {
			return
		}
		data := b[min(off, int64(len(b))):min(off+n, int64(len(b)))]
		switch typ {
		case qcow2ExtBackingFmt:
			res.Details.BackingFormat = cstring(data)
		case qcow2ExtDataFile:
			res.Details.DataFile = cstring(data)
			if res.Details.DataFile == "" {
				res.Details.DataFile = "(empty name)"
			}
		case qcow2ExtCrypto:
			res.Details.Encrypted = true
		}
		off += (n + 7) &^ 7
	}
}

func byteAt(b []byte, off int) byte {
	if off < 0 || off >= len(b) {
		return 0
	}
	return b[off]
}
