package inspect

// ISO 9660: volume descriptors start at sector 16 (2048-byte sectors), each
// with a type byte, "CD001" and version 1.
const (
	isoDescriptorOff = 16 * 2048
	isoDescriptorLen = 2048
	isoPrimary       = 1
)

type isoProbe struct {
	found      bool
	volumeSize int64
}

// probeISO looks for the first volume descriptor. CD001 anywhere else does
// not count.
func probeISO(rd *reader) (isoProbe, error) {
	d, full, err := rd.readFull(isoDescriptorOff, isoDescriptorLen)
	if err != nil || !full {
		return isoProbe{}, err
	}
	if !hasAt(d, 1, "CD001") || d[6] != 1 {
		return isoProbe{}, nil
	}
	switch d[0] {
	case 0, 1, 2, 3, 255: // boot record, primary, supplementary, partition, terminator
	default:
		return isoProbe{}, nil
	}
	p := isoProbe{found: true}
	if d[0] == isoPrimary {
		// Both-endian fields: little-endian half first.
		p.volumeSize = int64(le32(d, 80)) * int64(le16(d, 128))
	}
	return p, nil
}

// partitionTable names the partition table a raw or hybrid disk carries.
// Informational only: MBR and GPT disks are raw.
func partitionTable(head []byte) string {
	switch {
	case hasAt(head, 512, "EFI PART"):
		return "gpt"
	case hasAt(head, 510, "\x55\xaa"):
		return "mbr"
	}
	return ""
}
