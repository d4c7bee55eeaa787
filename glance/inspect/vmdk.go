package inspect

import (
	"math"
	"strconv"
	"strings"
)

// VMDK sparse extent header (VMware "Virtual Disk Format 5.0"), little-endian.
const (
	vmdkMagic         = "KDMV"
	vmdk3Magic        = "COWD"
	vmdkSector        = 512
	vmdkGDAtEnd       = math.MaxUint64
	vmdkMarkerFooter  = 3
	vmdkFlagCompress  = 1 << 16
	vmdkMaxVersion    = 3
	vmdkMaxGrain      = 0x200000 // sectors; qemu: "Invalid granularity"
	vmdkMaxGTEs       = 512      // qemu: "L2 table size too big"
	vmdkMaxDescriptor = 1 << 20  // qemu reads no more than 1 MiB of descriptor
	vmdkMaxExtents    = 1024
	probeBufSize      = 2048 // what qemu looks at when it probes a format
)

func isVMDK(head []byte) bool {
	return hasAt(head, 0, vmdkMagic) || hasAt(head, 0, vmdk3Magic) || isVMDKDescriptor(head)
}

// isVMDKDescriptor follows qemu's vmdk_probe for text descriptors: comment
// and blank lines, then "version=1|2|3" ending the line.
func isVMDKDescriptor(head []byte) bool {
	b := head[:min(len(head), probeBufSize)]
	for p := 0; p < len(b); {
		switch b[p] {
		case '#':
			for p < len(b) && b[p] != '\n' {
				p++
			}
			p++
			continue
		case ' ':
			for p < len(b) && b[p] == ' ' {
				p++
			}
			if p < len(b) && b[p] == '\r' {
				p++
			}
			if p == len(b) || b[p] != '\n' {
				return false
			}
			p++
			continue
		}
		for _, v := range []string{"version=1", "version=2", "version=3"} {
			if hasAt(b, p, v+"\n") || hasAt(b, p, v+"\r\n") {
				return true
			}
		}
		return false
	}
	return false
}

// vmdkSparseHeader is the part of a SparseExtentHeader we use.
type vmdkSparseHeader struct {
	version, flags    uint32
	capacity, grain   uint64
	descOff, descSize uint64
	numGTEs           uint32
	gdOff             uint64
	compress          uint16
}

func readVMDKSparseHeader(b []byte) vmdkSparseHeader {
	return vmdkSparseHeader{
		version:  le32(b, 4),
		flags:    le32(b, 8),
		capacity: le64(b, 12),
		grain:    le64(b, 20),
		descOff:  le64(b, 28),
		descSize: le64(b, 36),
		numGTEs:  le32(b, 44),
		gdOff:    le64(b, 56),
		compress: le16(b, 77),
	}
}

func parseVMDK(rd *reader, head []byte, res *Result) error {
	switch {
	case hasAt(head, 0, vmdkMagic):
		return parseVMDKSparse(rd, head, res)
	case hasAt(head, 0, vmdk3Magic):
		res.Details.Subformat = "vmdk3"
		res.VirtualSize = int64(le32(head, 12)) * vmdkSector
		res.unsafe("vmdk version 3 (COWD) images are not supported")
		return nil
	}
	text, err := rd.read(0, vmdkMaxDescriptor)
	if err != nil {
		return err
	}
	d := parseVMDKDescriptor(text)
	applyVMDKDescriptor(d, false, res)
	var total int64
	for _, e := range d.extents {
		if e.Sectors > (math.MaxInt64-total)/vmdkSector {
			res.unsafe("vmdk extents add up to more than 2^63 bytes")
			total = 0
			break
		}
		total += e.Sectors * vmdkSector
	}
	res.VirtualSize = total
	if len(d.extents) == 0 {
		res.unsafe("vmdk descriptor has no extents")
	}
	return nil
}

// parseVMDKSparse handles monolithicSparse and streamOptimized files: the
// header (or, with the grain directory at the end, the footer) and every
// embedded descriptor they point at.
func parseVMDKSparse(rd *reader, head []byte, res *Result) error {
	if len(head) < vmdkSector {
		res.unsafe("vmdk header is truncated (%d bytes)", len(head))
		return nil
	}
	h := readVMDKSparseHeader(head)
	descs := []vmdkSparseHeader{h}
	if h.gdOff == vmdkGDAtEnd {
		// VMware style streamOptimized: footer marker (val 1, type 3),
		// footer header and end-of-stream marker fill the last three
		// sectors.
		foot, full, err := rd.readFull(rd.size-3*vmdkSector, 3*vmdkSector)
		if err != nil {
			return err
		}
		if !full || rd.size < 4*vmdkSector || le64(foot, 0) != 1 || le32(foot, 8) != 0 ||
			le32(foot, 12) != vmdkMarkerFooter || !hasAt(foot, vmdkSector, vmdkMagic) ||
			!allZero(foot[2*vmdkSector:2*vmdkSector+16]) {
			res.unsafe("vmdk grain directory is at the end but the footer is invalid")
			return nil
		}
		h = readVMDKSparseHeader(foot[vmdkSector : 2*vmdkSector])
		if h.gdOff == vmdkGDAtEnd {
			res.unsafe("vmdk footer has no grain directory offset")
		}
		descs = append(descs, h)
	}
	res.Details.Version = h.version
	if h.version < 1 || h.version > vmdkMaxVersion {
		res.unsafe("vmdk version %d is not supported", h.version)
		return nil
	}
	if h.grain == 0 || h.grain > vmdkMaxGrain {
		res.unsafe("vmdk grain of %d sectors is invalid", h.grain)
		return nil
	}
	if h.numGTEs == 0 || h.numGTEs > vmdkMaxGTEs {
		res.unsafe("vmdk grain table size %d is invalid", h.numGTEs)
	}
	if h.capacity > math.MaxInt64/vmdkSector {
		res.unsafe("vmdk capacity of %d sectors is too large", h.capacity)
		return nil
	}
	res.VirtualSize = int64(h.capacity) * vmdkSector
	res.Details.ClusterSize = int64(h.grain) * vmdkSector
	if h.flags&vmdkFlagCompress != 0 {
		switch h.compress {
		case 1:
			res.Details.Compression = "deflate"
		default:
			res.unsafe("vmdk compression algorithm %d is unknown", h.compress)
		}
	}

	seen := map[[2]uint64]bool{}
	for _, dh := range descs {
		key := [2]uint64{dh.descOff, dh.descSize}
		if dh.descOff == 0 || seen[key] {
			continue
		}
		seen[key] = true
		if dh.descOff > uint64(rd.size)/vmdkSector || dh.descSize == 0 {
			res.unsafe("vmdk embedded descriptor lies outside the image")
			continue
		}
		n := min(dh.descSize, vmdkMaxDescriptor/vmdkSector) * vmdkSector
		text, err := rd.read(int64(dh.descOff)*vmdkSector, int(n))
		if err != nil {
			return err
		}
		applyVMDKDescriptor(parseVMDKDescriptor(text), true, res)
	}
	if len(seen) == 0 {
		// A split extent file (e.g. "x-s001.vmdk") has no descriptor;
		// qemu cannot open it alone.
		res.Details.Subformat = "sparseExtent"
		res.unsafe("vmdk sparse extent has no descriptor (it is one piece of a split disk)")
	}
	return nil
}

// vmdkDescriptor is what we take from a descriptor's text.
type vmdkDescriptor struct {
	createType string
	parentCID  string
	parentHint string
	extents    []VMDKExtent
	bad        []string // malformed extent lines (quoted)
	tooMany    bool
}

// parseVMDKDescriptor reads key=value and extent lines; text ends at the
// first NUL, as in qemu.
func parseVMDKDescriptor(text []byte) vmdkDescriptor {
	var d vmdkDescriptor
	for line := range strings.SplitSeq(cstring(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if access, rest := cutField(line); access == "RW" || access == "RDONLY" || access == "NOACCESS" {
			if len(d.extents) >= vmdkMaxExtents {
				d.tooMany = true
				continue
			}
			e, ok := parseVMDKExtent(access, rest)
			if !ok {
				if len(d.bad) < 4 {
					d.bad = append(d.bad, line[:min(len(line), 80)])
				}
				continue
			}
			d.extents = append(d.extents, e)
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		val = strings.Trim(strings.TrimSpace(val), `"`)
		switch strings.TrimSpace(key) {
		case "createType":
			d.createType = val
		case "parentCID":
			d.parentCID = val
		case "parentFileNameHint":
			d.parentHint = val
		}
	}
	return d
}

// parseVMDKExtent parses `SECTORS TYPE ["FILENAME" [OFFSET]]`.
func parseVMDKExtent(access, rest string) (VMDKExtent, bool) {
	e := VMDKExtent{Access: access}
	sectors, rest := cutField(rest)
	typ, rest := cutField(rest)
	if typ == "" {
		return e, false
	}
	n, err := strconv.ParseInt(sectors, 10, 64)
	if err != nil || n < 0 {
		return e, false
	}
	e.Sectors, e.Type = n, typ
	// Like qemu, a file name must be quoted; only ZERO has none.
	switch name, quoted := strings.CutPrefix(rest, `"`); {
	case quoted:
		i := strings.IndexByte(name, '"')
		if i < 0 {
			return e, false
		}
		e.Filename = name[:i]
	case rest != "" || typ != "ZERO":
		return e, false
	}
	return e, true
}

// cutField splits off the first space-separated field of s.
func cutField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " \t")
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t")
}

// applyVMDKDescriptor records a descriptor and the reasons it is unsafe.
// In a sparse file (embedded) one SPARSE extent with a plain file name is
// the file itself; any other extent that names a file makes a consumer
// open that file.
func applyVMDKDescriptor(d vmdkDescriptor, embedded bool, res *Result) {
	if d.createType != "" {
		res.Details.Subformat = d.createType
	}
	res.Details.Extents = d.extents
	self := false
	for _, e := range d.extents {
		if e.Type == "ZERO" {
			continue
		}
		if embedded && !self && e.Type == "SPARSE" && isPlainFileName(e.Filename) {
			self = true
			continue
		}
		res.unsafe("vmdk extent %s %q names another file (it would expose a host file)", e.Type, e.Filename)
	}
	for _, l := range d.bad {
		res.unsafe("vmdk descriptor has a malformed extent line %q", l)
	}
	if d.tooMany {
		res.unsafe("vmdk descriptor has more than %d extents", vmdkMaxExtents)
	}
	if d.parentHint != "" || (d.parentCID != "" && !strings.EqualFold(d.parentCID, "ffffffff")) {
		res.Details.BackingFile = d.parentHint
		res.unsafe("vmdk has a parent file %q (it would expose a host file)", d.parentHint)
	}
}

// isPlainFileName reports a name without any directory part.
func isPlainFileName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\:\x00")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
