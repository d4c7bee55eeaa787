package inspect

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const corpusDir = "../../testdata/inspect"

// caseFile is one entry of a corpus folder's expected.json (qemu-img's
// answers plus header fields read by hand).
type caseFile struct {
	FileSize int64  `json:"file_size"`
	SHA256   string `json:"sha256"`
	QemuImg  *struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
		Error       string `json:"error"`
	} `json:"qemu_img"`
	ForcedVPC *struct {
		VirtualSize int64 `json:"virtual-size"`
	} `json:"qemu_img_forced_vpc"`
	FooterLast512 *struct {
		CurrentSize int64 `json:"current_size"`
		DiskType    int   `json:"disk_type"`
	} `json:"footer_last512"`
	CD001 bool `json:"cd001_at_32769"`
}

// safety is what we expect beyond format and size. The corpus README
// states these rules; expected.json carries no safety field.
type safety struct {
	reason    string // substring of the Safe() error; "" = safe
	ambiguous bool
}

func corpusSafety() map[string]safety {
	hostFile := "(it would expose a host file)"
	return map[string]safety{
		"C14-vmdk-descriptor-streamoptimized/flat-descriptor-dotdot.vmdk":       {reason: `FLAT "../../../../etc/hostname" names another file ` + hostFile},
		"C14-vmdk-descriptor-streamoptimized/flat-descriptor-hostname.vmdk":     {reason: `FLAT "/etc/hostname" names another file`},
		"C14-vmdk-descriptor-streamoptimized/sparse-with-flat-extent.vmdk":      {reason: `FLAT "/etc/hostname" names another file`},
		"C14-vmdk-descriptor-streamoptimized/stream-optimized-footer-evil.vmdk": {reason: `FLAT "/etc/hostname" names another file`},
		"C16-iso-hybrid-fat-detection/iso-with-qcow2-in-system-area.iso":        {reason: "both qcow2 and an ISO 9660 image", ambiguous: true},
		"extra-qemu-img/qcow2-backing.qcow2":                                    {reason: `qcow2 has a backing file "base.raw" ` + hostFile},
		"extra-qemu-img/qcow2-data-file.qcow2":                                  {reason: `qcow2 has an external data file "data.raw" ` + hostFile},
		"extra-qemu-img/qed-backing.qed":                                        {reason: `qed has a backing file "base.raw"`},
		"extra-qemu-img/vmdk-child.vmdk":                                        {reason: `vmdk has a parent file "base.vmdk"`},
		"extra-qemu-img/vmdk-split.vmdk":                                        {reason: `SPARSE "vmdk-split-s001.vmdk" names another file`},
	}
}

// want derives the expected format and virtual size from expected.json.
// qemu-img is the truth, with two documented departures: a fixed VHD
// (qemu probes it as raw, its footer is at the end) is vhd with
// current_size; an ISO 9660 image (qemu: raw) is iso with the file size.
func (c caseFile) want(t *testing.T, name string) (format string, size int64) {
	t.Helper()
	switch {
	case c.QemuImg == nil:
		t.Fatalf("%s: no qemu_img entry", name)
	case c.QemuImg.Error != "":
		// qemu fails to open it; only the ambiguous ISO is like that.
		if !strings.Contains(c.QemuImg.Error, "qcow2") {
			t.Fatalf("%s: unexpected qemu error case %q", name, c.QemuImg.Error)
		}
		return FormatQCOW2, 0
	case c.FooterLast512 != nil && c.FooterLast512.DiskType == vhdTypeFixed:
		return FormatVHD, c.FooterLast512.CurrentSize
	case c.QemuImg.Format == "vpc":
		return FormatVHD, c.QemuImg.VirtualSize
	case c.CD001:
		return FormatISO, c.FileSize
	}
	return c.QemuImg.Format, c.QemuImg.VirtualSize
}

// TestCorpus checks every file under testdata/inspect against its folder's
// expected.json: format, virtual size, safety, and that reads stay small.
func TestCorpus(t *testing.T) {
	safe := corpusSafety()
	dirs, err := filepath.Glob(filepath.Join(corpusDir, "*", "expected.json"))
	if err != nil || len(dirs) < 5 {
		t.Fatalf("corpus not found: %v (%d folders)", err, len(dirs))
	}
	seen := 0
	for _, ej := range dirs {
		dir := filepath.Dir(ej)
		var cases map[string]caseFile
		raw, err := os.ReadFile(ej)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &cases); err != nil {
			t.Fatalf("%s: %v", ej, err)
		}
		files, _ := os.ReadDir(dir)
		for _, f := range files {
			if strings.HasSuffix(f.Name(), ".json") || strings.HasSuffix(f.Name(), ".md") {
				continue
			}
			if _, ok := cases[f.Name()]; !ok {
				t.Errorf("%s/%s is not described in expected.json", dir, f.Name())
			}
		}
		for name, c := range cases {
			key := filepath.Base(dir) + "/" + name
			seen++
			t.Run(key, func(t *testing.T) {
				data, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != c.SHA256 || int64(len(data)) != c.FileSize {
					t.Fatalf("file differs from the corpus (sha256/size); copy it again, do not regenerate")
				}
				format, size := c.want(t, key)
				cr := &countingReader{data: data}
				res, err := Detect(cr, int64(len(data)))
				if err != nil {
					t.Fatalf("Detect: %v", err)
				}
				if res.Format != format || res.VirtualSize != size {
					t.Errorf("got %s %d, want %s %d (unsafe: %q)", res.Format, res.VirtualSize, format, size, res.Unsafe)
				}
				if c.ForcedVPC != nil && res.Details.QemuVirtualSize != c.ForcedVPC.VirtualSize {
					t.Errorf("QemuVirtualSize = %d, qemu-img -f vpc says %d", res.Details.QemuVirtualSize, c.ForcedVPC.VirtualSize)
				}
				checkSafety(t, res, safe[key])
				t.Logf("%d reads, %d bytes", cr.reads, cr.total)
				// Headers only: never anything like the whole image, and
				// few requests (each costs ~10 ms against Glance).
				if cr.reads > maxReadsFor(format) {
					t.Errorf("%d reads, want at most %d", cr.reads, maxReadsFor(format))
				}
				if cr.total > 3<<20 || (len(data) > 4<<20 && cr.total > int64(len(data))/2) {
					t.Errorf("read %d bytes of a %d byte image", cr.total, len(data))
				}
			})
		}
	}
	if seen < 40 {
		t.Errorf("only %d corpus files checked", seen)
	}
}

func checkSafety(t *testing.T, res Result, want safety) {
	t.Helper()
	err := res.Safe()
	if want.reason == "" {
		if err != nil {
			t.Errorf("Safe() = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Safe() = nil, want an error containing %q", want.reason)
	}
	if !strings.Contains(err.Error(), want.reason) || !strings.HasSuffix(err.Error(), ": refused") {
		t.Errorf("Safe() = %q, want it to contain %q", err, want.reason)
	}
	var ue *UnsafeError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnsafe) || ue.Format != res.Format {
		t.Errorf("Safe() error %v is not an *UnsafeError matching ErrUnsafe", err)
	}
	if res.Ambiguous != want.ambiguous || errors.Is(err, ErrAmbiguous) != want.ambiguous {
		t.Errorf("Ambiguous = %v (errors.Is ErrAmbiguous %v), want %v", res.Ambiguous, errors.Is(err, ErrAmbiguous), want.ambiguous)
	}
	if want.ambiguous && !slices.Contains(res.Candidates, FormatISO) {
		t.Errorf("Candidates = %v, want iso among them", res.Candidates)
	}
}

// countingReader is a bytes.Reader-like io.ReaderAt that counts bytes read.
type countingReader struct {
	data  []byte
	total int64
	reads int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	if off >= int64(len(c.data)) {
		return 0, io.EOF
	}
	n := copy(p, c.data[off:])
	c.total += int64(n)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// maxReadsFor is how many ReadAt calls Detect may make on a corpus image:
// the head, plus the end of the file, plus what VHDX spreads over its first
// megabytes (two headers, a region table, the metadata table and items).
func maxReadsFor(format string) int {
	if format == FormatVHDX {
		return 8
	}
	return 3
}
