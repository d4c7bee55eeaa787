// Package inspect identifies disk image formats from their headers, reports
// the virtual size, and says whether an image is safe to hand to a consumer
// that follows references inside it (qemu, VDSM).
//
// An image is unsafe when opening it would make the consumer read a file of
// the host (qcow2 backing or external data files, VMDK extents naming other
// files, VHD/VHDX/VDI parents), when its header is malformed or uses
// features we cannot vouch for, or when it looks like two formats at once
// (an ISO whose first bytes are a qcow2 header is opened as qcow2 by a
// probing consumer).
//
// Where we depart from qemu-img's probe, on purpose: a fixed VHD (its only
// header is the footer in the last 512 bytes) is "vhd" with current_size,
// where qemu says raw; an ISO 9660 image is "iso", where qemu says raw.
//
// Detect reads headers only. Every read, table and loop is capped, so a
// hostile image costs at most a few MiB of reads and memory; it never reads
// the whole image.
package inspect

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format names reported in Result.Format. They match qemu-img's names except
// for VHD (qemu calls it "vpc") and ISO (qemu calls it "raw").
const (
	FormatRaw       = "raw"
	FormatQCOW2     = "qcow2"
	FormatVMDK      = "vmdk"
	FormatVHD       = "vhd"
	FormatVHDX      = "vhdx"
	FormatVDI       = "vdi"
	FormatISO       = "iso"
	FormatQED       = "qed"
	FormatLUKS      = "luks"
	FormatParallels = "parallels"
	FormatBochs     = "bochs"
	FormatCloop     = "cloop"
)

// Subformats reported in Details.Subformat.
const (
	SubformatFixed        = "fixed"
	SubformatDynamic      = "dynamic"
	SubformatDifferencing = "differencing"
)

// Result is what Detect found out about an image.
type Result struct {
	// Format is one of the Format* constants; "raw" when nothing else matched.
	Format string `json:"format"`
	// VirtualSize is the size of the disk the guest sees, in bytes. For raw
	// and iso it is the file size. It is 0 when the header is unusable (then
	// Unsafe says why).
	VirtualSize int64 `json:"virtual_size"`
	// Details holds format-specific header facts.
	Details Details `json:"details"`
	// Unsafe lists why the image must not be used as is; empty means safe.
	Unsafe []string `json:"unsafe,omitempty"`
	// Ambiguous is set when the image matches more than one format, e.g. an
	// ISO 9660 image that starts with a qcow2 magic. Such images are unsafe.
	Ambiguous bool `json:"ambiguous,omitempty"`
	// Candidates lists every format that matched, in the order a probing
	// consumer would prefer them; Format is the first. Usually one entry.
	Candidates []string `json:"candidates"`
}

// Details are format-specific facts read from the headers. Fields that do
// not apply to a format stay zero.
type Details struct {
	// Version is the header version (qcow2 2 or 3, VMDK 1–3, VHDX 1, VDI
	// 0x00010001 for 1.1, VHD 0x00010000).
	Version uint32 `json:"version,omitempty"`
	// Subformat is e.g. "monolithicSparse", "streamOptimized" (VMDK
	// createType), "fixed", "dynamic", "differencing" (VHD, VHDX, VDI).
	Subformat string `json:"subformat,omitempty"`
	// ClusterSize is the allocation unit in bytes: qcow2 cluster, VMDK grain,
	// VHD/VHDX/VDI block.
	ClusterSize int64 `json:"cluster_size,omitempty"`
	// Compression is "zlib" or "zstd" for qcow2, "deflate" for VMDK.
	Compression string `json:"compression,omitempty"`
	// ExtendedL2 reports qcow2 subcluster allocation (valid, just newer).
	ExtendedL2 bool `json:"extended_l2,omitempty"`
	// Encrypted reports qcow2 encryption (the bytes are not readable
	// without a key; it exposes nothing of the host).
	Encrypted bool `json:"encrypted,omitempty"`
	// BackingFile is the parent file named by the image, if any.
	BackingFile string `json:"backing_file,omitempty"`
	// BackingFormat is the qcow2/qed backing format header extension.
	BackingFormat string `json:"backing_format,omitempty"`
	// DataFile is the qcow2 external data file name, if any.
	DataFile string `json:"data_file,omitempty"`
	// Extents are the VMDK descriptor's extent lines.
	Extents []VMDKExtent `json:"extents,omitempty"`
	// CreatorApp is the VHD creator application tag ("qemu", "win ", ...).
	CreatorApp string `json:"creator_app,omitempty"`
	// QemuVirtualSize is the size qemu's vpc driver reports for a VHD: the
	// CHS geometry for "vpc " and "qemu" creators, else current_size. It can
	// be smaller than VirtualSize (current_size), which is what the image
	// holds.
	QemuVirtualSize int64 `json:"qemu_virtual_size,omitempty"`
	// PartitionTable is "mbr" or "gpt" when a raw or iso image carries one.
	PartitionTable string `json:"partition_table,omitempty"`
	// ISOVolumeSize is the ISO 9660 volume space size in bytes (from the
	// primary volume descriptor); it may be smaller than the file.
	ISOVolumeSize int64 `json:"iso_volume_size,omitempty"`
}

// VMDKExtent is one extent line of a VMDK descriptor.
type VMDKExtent struct {
	Access   string `json:"access"`   // RW, RDONLY or NOACCESS
	Sectors  int64  `json:"sectors"`  // size in 512-byte sectors
	Type     string `json:"type"`     // SPARSE, FLAT, ZERO, VMFS, ...
	Filename string `json:"filename"` // empty for ZERO
}

// ReaderAtFunc adapts a read function to io.ReaderAt, e.g. a BlockSource
// read bound to the caller's context:
//
//	inspect.Detect(inspect.ReaderAtFunc(func(p []byte, off int64) (int, error) {
//		return src.ReadAt(ctx, p, off)
//	}), src.Size())
type ReaderAtFunc func(p []byte, off int64) (int, error)

// ReadAt calls f.
func (f ReaderAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

// ErrUnsafe is matched (errors.Is) by every error from Result.Safe.
var ErrUnsafe = errors.New("inspect: unsafe image")

// ErrAmbiguous is matched by the error from Result.Safe when the image
// matches more than one format.
var ErrAmbiguous = errors.New("inspect: ambiguous image format")

// UnsafeError is returned by Result.Safe. Its message names the reasons.
type UnsafeError struct {
	Format    string
	Reasons   []string
	Ambiguous bool
}

func (e *UnsafeError) Error() string {
	return "inspect: " + strings.Join(e.Reasons, "; ") + ": refused"
}

// Unwrap lets errors.Is match ErrUnsafe, and ErrAmbiguous when ambiguous.
func (e *UnsafeError) Unwrap() []error {
	if e.Ambiguous {
		return []error{ErrUnsafe, ErrAmbiguous}
	}
	return []error{ErrUnsafe}
}

// Safe returns nil when the image may be used as is, else an *UnsafeError
// naming every reason, e.g.
// `inspect: qcow2 has a backing file "x.qcow2" (it would expose a host file): refused`.
func (r Result) Safe() error {
	if len(r.Unsafe) == 0 && !r.Ambiguous {
		return nil
	}
	reasons := r.Unsafe
	if len(reasons) == 0 {
		reasons = []string{"image matches several formats " + strings.Join(r.Candidates, ", ")}
	}
	return &UnsafeError{Format: r.Format, Reasons: append([]string(nil), reasons...), Ambiguous: r.Ambiguous}
}

func (r *Result) unsafe(format string, args ...any) {
	if len(r.Unsafe) >= maxReasons {
		return
	}
	r.Unsafe = append(r.Unsafe, fmt.Sprintf(format, args...))
}

// headerFormat is one format recognised by a magic near offset 0 (or, for a
// fixed VHD, at the end). parse fills res; it returns only I/O errors.
type headerFormat struct {
	name  string
	match func(head []byte) bool
	parse func(rd *reader, head []byte, res *Result) error
}

// headerFormats lists the formats in qemu's probe preference; magics at
// offset 0 are exclusive, so the order matters only for text formats. A
// function, not a variable, so nothing at package level can be changed.
func headerFormats() []headerFormat {
	return []headerFormat{
		{FormatQCOW2, isQCOW2, parseQCOW2},
		{FormatQED, isQED, parseQED},
		{FormatVMDK, isVMDK, parseVMDK},
		{FormatVDI, isVDI, parseVDI},
		{FormatVHDX, isVHDX, parseVHDX},
		{FormatVHD, isVHD, parseVHD},
		{FormatLUKS, isLUKS, parseUnsupported(FormatLUKS, "a LUKS encrypted volume")},
		{FormatParallels, isParallels, parseUnsupported(FormatParallels, "a Parallels disk")},
		{FormatBochs, isBochs, parseUnsupported(FormatBochs, "a Bochs disk")},
		{FormatCloop, isCloop, parseUnsupported(FormatCloop, "a cloop image")},
	}
}

// Detect inspects the image of size bytes behind r. It returns an error
// only when reading fails or size is negative; anything wrong with the image
// itself is reported in Result.Unsafe.
func Detect(r io.ReaderAt, size int64) (Result, error) {
	if size < 0 {
		return Result{}, fmt.Errorf("inspect: negative image size %d", size)
	}
	rd := &reader{r: r, size: size, budget: maxTotalRead}
	head, err := rd.read(0, headSize)
	if err != nil {
		return Result{}, err
	}
	var res Result
	matched := false
	for _, hf := range headerFormats() {
		if !hf.match(head) {
			continue
		}
		res.Format = hf.name
		if err := hf.parse(rd, head, &res); errors.Is(err, errBudget) {
			res.unsafe("%s headers exceed the inspection limits (%v)", hf.name, err)
		} else if err != nil {
			return Result{}, err
		}
		matched = true
		break
	}
	if !matched {
		ok, err := parseFixedVHD(rd, &res)
		if err != nil {
			return Result{}, err
		}
		matched = ok
	}
	if matched {
		res.Candidates = []string{res.Format}
	}
	iso, err := probeISO(rd)
	if err != nil {
		return Result{}, err
	}
	switch {
	case iso.found && matched:
		res.Ambiguous = true
		res.Candidates = append(res.Candidates, FormatISO)
		res.Details.ISOVolumeSize = iso.volumeSize
		res.unsafe("image is both %s and an ISO 9660 image (a consumer that probes would open it as %s)", res.Format, res.Format)
	case iso.found:
		res.Format = FormatISO
		res.Candidates = []string{FormatISO}
		res.VirtualSize = size
		res.Details.ISOVolumeSize = iso.volumeSize
	case !matched:
		res.Format = FormatRaw
		res.Candidates = []string{FormatRaw}
		res.VirtualSize = size
	}
	if res.Format == FormatRaw || res.Format == FormatISO {
		res.Details.PartitionTable = partitionTable(head)
	}
	return res, nil
}
