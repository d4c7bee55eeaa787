package inspect

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

// Builders for synthetic images, so each parser's edge cases can be
// table-tested and used as fuzz seeds without big files.

type qcow2Ext struct {
	typ  uint32
	data []byte
}

type qcow2Opts struct {
	version     uint32
	clusterBits uint32
	size        uint64
	backing     string
	incompat    uint64
	headerLen   uint32 // v3; 0 = 112
	compression byte
	exts        []qcow2Ext
	crypt       uint32
}

func buildQCOW2(o qcow2Opts) []byte {
	if o.version == 0 {
		o.version = 3
	}
	if o.clusterBits == 0 {
		o.clusterBits = 16
	}
	b := make([]byte, 1<<o.clusterBits*2)
	be := binary.BigEndian
	copy(b, qcow2Magic)
	be.PutUint32(b[4:], o.version)
	be.PutUint32(b[20:], o.clusterBits)
	be.PutUint64(b[24:], o.size)
	be.PutUint32(b[32:], o.crypt)
	off := uint32(qcow2V2HeaderLen)
	if o.version == 3 {
		if o.headerLen == 0 {
			o.headerLen = 112
		}
		be.PutUint64(b[72:], o.incompat)
		be.PutUint32(b[96:], 4)
		be.PutUint32(b[100:], o.headerLen)
		b[104] = o.compression
		off = o.headerLen
	}
	for _, e := range o.exts {
		be.PutUint32(b[off:], e.typ)
		be.PutUint32(b[off+4:], uint32(len(e.data)))
		copy(b[off+8:], e.data)
		off += 8 + (uint32(len(e.data))+7)&^7
	}
	off += 8 // end marker (zeros)
	if o.backing != "" {
		be.PutUint64(b[8:], uint64(off))
		be.PutUint32(b[16:], uint32(len(o.backing)))
		copy(b[off:], o.backing)
	}
	return b
}

// vmdkSparse builds a monolithicSparse/streamOptimized header with an
// embedded descriptor at sector 1; footer adds the VMware style footer.
func buildVMDKSparse(version uint32, capacity uint64, desc string, footerDesc string) []byte {
	const sec = 512
	hdr := func(gd uint64, descOff uint64) []byte {
		h := make([]byte, sec)
		le := binary.LittleEndian
		copy(h, vmdkMagic)
		le.PutUint32(h[4:], version)
		le.PutUint32(h[8:], 3|vmdkFlagCompress|1<<17)
		le.PutUint64(h[12:], capacity)
		le.PutUint64(h[20:], 128)
		le.PutUint64(h[28:], descOff)
		le.PutUint64(h[36:], 20)
		le.PutUint32(h[44:], 512)
		le.PutUint64(h[56:], gd)
		h[73], h[74], h[75], h[76] = '\n', ' ', '\r', '\n'
		le.PutUint16(h[77:], 1)
		return h
	}
	d := make([]byte, 20*sec)
	copy(d, desc)
	if footerDesc == "" {
		return append(append(hdr(21, 1), d...), make([]byte, 8*sec)...)
	}
	fd := make([]byte, 20*sec)
	copy(fd, footerDesc)
	out := append(hdr(vmdkGDAtEnd, 1), d...)
	out = append(out, fd...) // at sector 21
	marker := make([]byte, sec)
	binary.LittleEndian.PutUint64(marker, 1)
	binary.LittleEndian.PutUint32(marker[12:], vmdkMarkerFooter)
	out = append(out, marker...)
	out = append(out, hdr(41, 21)...)
	return append(out, make([]byte, sec)...)
}

func vmdkDesc(createType string, extra string, extents ...string) string {
	return "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n" + extra +
		"createType=\"" + createType + "\"\n\n# Extent description\n" + strings.Join(extents, "\n") + "\n"
}

// vhdFooter builds a valid VHD footer.
func vhdFooter(diskType uint32, creator string, size uint64, c uint16, h, s byte, dataOff uint64) []byte {
	f := make([]byte, vhdFooterSize)
	be := binary.BigEndian
	copy(f, vhdCookie)
	be.PutUint32(f[8:], 2)
	be.PutUint32(f[12:], 0x00010000)
	be.PutUint64(f[16:], dataOff)
	copy(f[28:32], creator)
	be.PutUint64(f[40:], size)
	be.PutUint64(f[48:], size)
	be.PutUint16(f[56:], c)
	f[58], f[59] = h, s
	be.PutUint32(f[60:], diskType)
	be.PutUint32(f[64:], vhdChecksum(f, 64))
	return f
}

func buildFixedVHD(creator string, size uint64, c uint16, h, s byte) []byte {
	return append(make([]byte, size), vhdFooter(vhdTypeFixed, creator, size, c, h, s, math1)...)
}

const math1 = ^uint64(0) // fixed disks have data offset 0xFFFFFFFFFFFFFFFF

func buildDynamicVHD(diskType uint32, size uint64, parent string) []byte {
	f := vhdFooter(diskType, "qemu", size, 8, 4, 17, 512)
	h := make([]byte, vhdDynHeaderSize)
	be := binary.BigEndian
	copy(h, vhdDynCookie)
	be.PutUint64(h[8:], ^uint64(0))
	be.PutUint64(h[16:], 1536)
	be.PutUint32(h[24:], 0x00010000)
	be.PutUint32(h[28:], 1)
	be.PutUint32(h[32:], 2<<20)
	for i, u := range utf16.Encode([]rune(parent)) {
		be.PutUint16(h[64+2*i:], u)
	}
	be.PutUint32(h[36:], vhdChecksum(h, 36))
	out := append(append([]byte{}, f...), h...)
	out = append(out, make([]byte, 512)...) // BAT
	return append(out, f...)
}

func guidBytes(s string) []byte {
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		panic("bad guid " + s)
	}
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, binary.BigEndian.Uint32(raw))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(raw[4:]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(raw[6:]))
	copy(b[8:], raw[8:])
	return b
}

func putCRC32C(b []byte) {
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

type vhdxItem struct {
	guid  string
	data  []byte
	flags uint32
}

// buildVHDX lays out a minimal VHDX: identifier, two headers, two region
// tables and a metadata region at 320 KiB holding items.
func buildVHDX(items []vhdxItem, logGUID bool) []byte {
	const metaOff, metaLen = 320 << 10, 128 << 10
	b := make([]byte, metaOff+metaLen)
	le := binary.LittleEndian
	copy(b, vhdxSignature)
	for i, off := range []int{vhdxHeader1, vhdxHeader2} {
		h := b[off : off+vhdxHeaderSize]
		copy(h, "head")
		le.PutUint64(h[8:], uint64(10+i))
		if logGUID {
			h[48] = 1
		}
		le.PutUint16(h[66:], 1)
		putCRC32C(h)
	}
	for _, off := range []int{vhdxRegion1, vhdxRegion2} {
		r := b[off : off+vhdxRegionSize]
		copy(r, "regi")
		le.PutUint32(r[8:], 2)
		copy(r[16:], guidBytes(vhdxRegionBAT))
		le.PutUint64(r[32:], 1<<20)
		le.PutUint32(r[40:], 1<<20)
		le.PutUint32(r[44:], 1)
		copy(r[48:], guidBytes(vhdxRegionMetadata))
		le.PutUint64(r[64:], metaOff)
		le.PutUint32(r[72:], metaLen)
		le.PutUint32(r[76:], 1)
		putCRC32C(r)
	}
	m := b[metaOff:]
	copy(m, "metadata")
	le.PutUint16(m[10:], uint16(len(items)))
	data := uint32(64 << 10)
	for i, it := range items {
		e := m[32+32*i:]
		copy(e, guidBytes(it.guid))
		le.PutUint32(e[16:], data)
		le.PutUint32(e[20:], uint32(len(it.data)))
		le.PutUint32(e[24:], it.flags)
		copy(m[data:], it.data)
		data += (uint32(len(it.data)) + 7) &^ 7
	}
	return b
}

func vhdxStdItems(size uint64, blockSize, flags uint32) []vhdxItem {
	fp := make([]byte, 8)
	binary.LittleEndian.PutUint32(fp, blockSize)
	binary.LittleEndian.PutUint32(fp[4:], flags)
	vs := make([]byte, 8)
	binary.LittleEndian.PutUint64(vs, size)
	ls := make([]byte, 4)
	binary.LittleEndian.PutUint32(ls, 512)
	return []vhdxItem{
		{vhdxMetaFileParams, fp, 4},
		{vhdxMetaDiskSize, vs, 6},
		{vhdxMetaLogical, ls, 6},
	}
}

// vhdxLocator builds a parent locator with one relative_path entry.
func vhdxLocator(path string) []byte {
	enc := func(s string) []byte {
		u := utf16.Encode([]rune(s))
		out := make([]byte, 2*len(u))
		for i, c := range u {
			binary.LittleEndian.PutUint16(out[2*i:], c)
		}
		return out
	}
	key, val := enc("relative_path"), enc(path)
	b := make([]byte, 32+len(key)+len(val))
	binary.LittleEndian.PutUint16(b[18:], 1)
	binary.LittleEndian.PutUint32(b[20:], 32)
	binary.LittleEndian.PutUint32(b[24:], uint32(32+len(key)))
	binary.LittleEndian.PutUint16(b[28:], uint16(len(key)))
	binary.LittleEndian.PutUint16(b[30:], uint16(len(val)))
	copy(b[32:], key)
	copy(b[32+len(key):], val)
	return b
}

func buildVDI(version, typ uint32, size uint64, block uint32, parent bool) []byte {
	b := make([]byte, 0x200)
	le := binary.LittleEndian
	copy(b, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	le.PutUint32(b[0x40:], vdiSignature)
	le.PutUint32(b[0x44:], version)
	le.PutUint32(b[0x48:], 0x180)
	le.PutUint32(b[0x4c:], typ)
	le.PutUint64(b[0x170:], size)
	le.PutUint32(b[0x178:], block)
	if parent {
		b[0x1a8] = 0xab
	}
	return b
}

// buildISO puts a volume descriptor of type typ at sector 16, with head
// as the first bytes (the "system area").
func buildISO(head []byte, typ byte, blocks uint32) []byte {
	b := make([]byte, 40*2048)
	copy(b, head)
	d := b[isoDescriptorOff:]
	d[0] = typ
	copy(d[1:], "CD001")
	d[6] = 1
	binary.LittleEndian.PutUint32(d[80:], blocks)
	binary.BigEndian.PutUint32(d[84:], blocks)
	binary.LittleEndian.PutUint16(d[128:], 2048)
	binary.BigEndian.PutUint16(d[130:], 2048)
	d = b[isoDescriptorOff+2048:]
	d[0] = 255
	copy(d[1:], "CD001")
	d[6] = 1
	return b
}
