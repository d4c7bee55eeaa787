package fs

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"path"
	"sort"
	"strings"
	"time"
)

// isoImagesUUID is the fixed image-group directory of an oVirt ISO domain.
const isoImagesUUID = "11111111-1111-1111-1111-111111111111"

// statusActive is the only Glance status whose images appear in the tree.
const statusActive = "active"

type kind int

const (
	kindDir   kind = iota
	kindImage      // the bytes of a Glance image
	kindData       // a small generated file held in memory
	kindLink       // a symlink
)

// entry is one name in a directory of a view. Entries are immutable.
type entry struct {
	name   string
	kind   kind
	ino    uint64
	path   string    // full path from the root ("" is the root)
	img    *Image    // kindImage
	data   []byte    // kindData
	target string    // kindLink
	mtime  time.Time // zero: use the view's time
}

// view is an immutable snapshot of the whole tree, built from one listing.
type view struct {
	dirs   map[string][]entry // directory path → entries sorted by name
	images map[string]*Image  // active images by id
	built  time.Time
}

// inoOf derives a stable inode number from what identifies a node, so the
// same image keeps its inode across listings and daemon restarts.
func inoOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	ino := h.Sum64()
	if ino <= 1 { // 0 is invalid and 1 is the root
		ino += 2
	}
	return ino
}

// imageKey names an image's content: the same id with other bytes is
// another file to the kernel (and to the cache).
func imageKey(img *Image) string {
	return fmt.Sprintf("%s\x00%d\x00%s\x00%s", img.ID, img.Size, img.Checksum, img.OSHashValue)
}

// metadataFile renders dom_md/metadata of an oVirt-like domain.
func metadataFile(info DomainInfo) []byte {
	clean := func(s string) string { // one value per line, always
		return strings.Map(func(r rune) rune {
			if r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CLASS=Iso\n")
	fmt.Fprintf(&b, "DESCRIPTION=%s\n", clean(info.Description))
	fmt.Fprintf(&b, "NAME=%s\n", clean(info.Name))
	fmt.Fprintf(&b, "SDUUID=%s\n", clean(info.UUID))
	fmt.Fprintf(&b, "TYPE=GLANCE\n")
	fmt.Fprintf(&b, "URL=%s\n", clean(info.URL))
	fmt.Fprintf(&b, "VERSION=0\n")
	return []byte(b.String())
}

// metaJSON is the meta/<id>.json document: Image.Meta when it is valid JSON,
// else the fields the tree knows.
func metaJSON(img *Image) []byte {
	if len(img.Meta) > 0 && json.Valid(img.Meta) {
		return append([]byte(nil), img.Meta...)
	}
	b, err := json.MarshalIndent(struct {
		ID              string    `json:"id"`
		Name            string    `json:"name"`
		Status          string    `json:"status"`
		Size            int64     `json:"size"`
		VirtualSize     int64     `json:"virtual_size,omitempty"`
		DiskFormat      string    `json:"disk_format"`
		ContainerFormat string    `json:"container_format"`
		Checksum        string    `json:"checksum,omitempty"`
		OSHashAlgo      string    `json:"os_hash_algo,omitempty"`
		OSHashValue     string    `json:"os_hash_value,omitempty"`
		CreatedAt       time.Time `json:"created_at"`
		UpdatedAt       time.Time `json:"updated_at"`
	}{img.ID, img.Name, img.Status, img.Size, img.VirtualSize, img.DiskFormat,
		img.ContainerFormat, img.Checksum, img.OSHashAlgo, img.OSHashValue,
		img.CreatedAt, img.UpdatedAt}, "", "  ")
	if err != nil { // cannot happen for these field types
		return nil
	}
	return append(b, '\n')
}

// sdDirName is the name of the domain's own directory: its sdUUID.
func sdDirName(info DomainInfo) string {
	sd := escapeName(info.UUID)
	if sd == "" || sd == "." || sd == ".." || sd == "by-id" || sd == "by-name" || sd == "meta" {
		sd = "sd-" + sd
	}
	return sd
}

// buildView lays out the tree for a domain and its listing. Images that are
// not active, or repeat an id, are left out.
func buildView(info DomainInfo, imgs []Image, now time.Time) *view {
	v := &view{dirs: map[string][]entry{}, images: map[string]*Image{}, built: now}
	var active []Image
	for _, img := range imgs {
		if img.Status != statusActive || img.ID == "" || v.images[img.ID] != nil {
			continue
		}
		img := img
		v.images[img.ID] = &img
		active = append(active, img)
	}

	sd := sdDirName(info)
	dir := func(parent, name string) entry {
		p := path.Join(parent, name)
		v.dirs[p] = v.dirs[p] // a directory exists even when empty
		return entry{name: name, kind: kindDir, ino: inoOf("dir", p), path: p}
	}
	add := func(parent string, e entry) {
		e.path = path.Join(parent, e.name)
		v.dirs[parent] = append(v.dirs[parent], e)
	}

	isoDir := path.Join(sd, "images", isoImagesUUID)
	for _, d := range [][2]string{
		{"", sd}, {sd, "dom_md"}, {sd, "images"}, {path.Join(sd, "images"), isoImagesUUID},
		{"", "by-id"}, {"", "by-name"}, {"", "meta"},
	} {
		add(d[0], dir(d[0], d[1]))
	}
	md := metadataFile(info)
	add(path.Join(sd, "dom_md"), entry{name: "metadata", kind: kindData, data: md,
		ino: inoOf("data", "dom_md/metadata", string(md))})

	isoNames := displayNames(active, true)
	plainNames := displayNames(active, false)
	for id, img := range v.images {
		ino := inoOf("image", imageKey(img))
		byID := escapeName(id)
		add("by-id", entry{name: byID, kind: kindImage, img: img, ino: ino, mtime: img.UpdatedAt})
		add(isoDir, entry{name: isoNames[id], kind: kindImage, img: img, ino: ino, mtime: img.UpdatedAt})
		target := "../by-id/" + byID
		add("by-name", entry{name: plainNames[id], kind: kindLink, target: target,
			ino: inoOf("link", plainNames[id], target), mtime: img.UpdatedAt})
		meta := metaJSON(img)
		add("meta", entry{name: truncName(byID+".json", maxNameLen), kind: kindData, data: meta,
			ino: inoOf("meta", id, string(meta)), mtime: img.UpdatedAt})
	}
	for p := range v.dirs {
		es := v.dirs[p]
		sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	}
	return v
}

// lookup finds name in directory dir.
func (v *view) lookup(dir, name string) (entry, bool) {
	es := v.dirs[dir]
	i := sort.Search(len(es), func(i int) bool { return es[i].name >= name })
	if i < len(es) && es[i].name == name {
		return es[i], true
	}
	return entry{}, false
}

// listsImages reports whether directory dir's content depends on the
// listing (and so may change on refresh).
func listsImages(sd, dir string) bool {
	switch dir {
	case "by-id", "by-name", "meta", path.Join(sd, "images", isoImagesUUID):
		return true
	}
	return false
}
