package inspect

import (
	"math"
)

// Formats qemu can probe but we do not accept. Each is reported under its
// own name and unsafe, so it can never pass as raw.
const (
	qedMagic      = "QED\x00"
	qedHasBacking = 1 << 0
	luksMagic     = "LUKS\xba\xbe"
	bochsMagic    = "Bochs Virtual HD Image"
	cloopMagic    = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
)

func isQED(head []byte) bool   { return hasAt(head, 0, qedMagic) }
func isLUKS(head []byte) bool  { return hasAt(head, 0, luksMagic) }
func isBochs(head []byte) bool { return hasAt(head, 0, bochsMagic) }
func isCloop(head []byte) bool { return hasAt(head, 0, cloopMagic) }
func isParallels(head []byte) bool {
	return hasAt(head, 0, "WithoutFreeSpace") || hasAt(head, 0, "WithouFreSpacExt")
}

// parseQED reads the size and the backing file of a QED image.
func parseQED(rd *reader, head []byte, res *Result) error {
	res.unsafe("qed images are not supported")
	if len(head) < 64 {
		return nil
	}
	res.Details.ClusterSize = int64(le32(head, 4))
	if size := le64(head, 48); size <= math.MaxInt64 {
		res.VirtualSize = int64(size)
	}
	if le64(head, 16)&qedHasBacking != 0 {
		off, n := int64(le32(head, 56)), int(le32(head, 60))
		name, err := rd.read(off, min(n, qcow2MaxBackingName))
		if err != nil {
			return err
		}
		res.Details.BackingFile = string(name)
		res.unsafe("qed has a backing file %q (it would expose a host file)", name)
	}
	return nil
}

// parseUnsupported reports a format we recognise but do not parse.
func parseUnsupported(name, what string) func(*reader, []byte, *Result) error {
	return func(_ *reader, _ []byte, res *Result) error {
		res.unsafe("image is %s (%s), which is not supported", what, name)
		return nil
	}
}
