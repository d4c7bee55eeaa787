package fs

import (
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameLen is the longest file name Linux accepts (NAME_MAX).
const maxNameLen = 255

// idPrefixLen is how much of an image id disambiguates duplicate names.
const idPrefixLen = 8

// escapeName percent-escapes the bytes of s that cannot or should not appear
// in a file name: '/', NUL and other control characters (C0, DEL, C1),
// invalid UTF-8, and '%' itself so that the mapping stays injective.
func escapeName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '/' || r == '%' || unicode.IsControl(r) || (r == utf8.RuneError && size <= 1) {
			for _, c := range []byte(s[i : i+size]) {
				b.WriteByte('%')
				b.WriteString(strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
			}
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// formatExt is the extension the ISO view gives an image of a disk format.
func formatExt(diskFormat string) string {
	switch strings.ToLower(diskFormat) {
	case "iso", "qcow2", "raw", "vmdk", "vhd", "vhdx", "vdi":
		return "." + strings.ToLower(diskFormat)
	default:
		return ".img"
	}
}

// withExt appends ext unless name already ends with it (any case).
func withExt(name, ext string) string {
	if len(name) > len(ext) && strings.EqualFold(name[len(name)-len(ext):], ext) {
		return name
	}
	return name + ext
}

// splitExt splits a short trailing extension (".iso") off name, so that
// truncation can keep it.
func splitExt(name string) (stem, ext string) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || len(name)-i > 16 {
		return name, ""
	}
	return name[:i], name[i:]
}

// truncName shortens name to at most max bytes, keeping its extension when
// practical and cutting only on a UTF-8 boundary outside a %XX escape.
func truncName(name string, max int) string {
	if len(name) <= max {
		return name
	}
	stem, ext := splitExt(name)
	if len(ext) >= max/2 {
		stem, ext = name, ""
	}
	cut := max - len(ext)
	for cut > 0 && !utf8.RuneStart(stem[cut]) {
		cut--
	}
	// A '%' in an escaped name always starts a three-byte escape.
	if cut >= 1 && stem[cut-1] == '%' {
		cut--
	} else if cut >= 2 && stem[cut-2] == '%' {
		cut -= 2
	}
	return stem[:cut] + ext
}

// insertBeforeExt puts tag before name's extension, truncating the stem so
// the tag always survives: names that differ in tag stay distinct.
func insertBeforeExt(name, tag string) string {
	stem, ext := splitExt(name)
	if len(ext)+len(tag) >= maxNameLen/2 {
		stem, ext = name, ""
	}
	return truncName(stem, maxNameLen-len(tag)-len(ext)) + tag + ext
}

// baseName is the display name of img before duplicates are resolved.
func baseName(img Image, iso bool) string {
	n := escapeName(img.Name)
	if n == "" || n == "." || n == ".." {
		n = escapeName(img.ID)
	}
	if iso {
		n = withExt(n, formatExt(img.DiskFormat))
	}
	return truncName(n, maxNameLen)
}

// displayNames gives every image a unique, safe file name; the result maps
// image id to name. With iso, names carry the disk format's extension as in
// an oVirt ISO domain. The result depends only on the set of images, not on
// their order. Images must have unique ids.
func displayNames(imgs []Image, iso bool) map[string]string {
	sorted := make([]Image, len(imgs))
	copy(sorted, imgs)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Name != sorted[j].Name {
			return sorted[i].Name < sorted[j].Name
		}
		return sorted[i].ID < sorted[j].ID
	})

	bases := make([]string, len(sorted))
	count := make(map[string]int, len(sorted))
	for i, img := range sorted {
		bases[i] = baseName(img, iso)
		count[bases[i]]++
	}

	names := make(map[string]string, len(sorted))
	taken := make(map[string]bool, len(sorted))
	// Unique names first, so a duplicate group never steals one.
	for i, img := range sorted {
		if count[bases[i]] == 1 {
			names[img.ID] = bases[i]
			taken[bases[i]] = true
		}
	}
	// Every member of a duplicate group gets an id prefix, so which image
	// keeps the plain name never depends on listing order.
	for i, img := range sorted {
		if count[bases[i]] == 1 {
			continue
		}
		id := escapeName(img.ID)
		short := id
		if len(short) > idPrefixLen {
			short = short[:idPrefixLen]
		}
		candidates := []string{
			truncName(short+"-"+bases[i], maxNameLen),
			truncName(id+"-"+bases[i], maxNameLen),
		}
		name := ""
		for _, c := range candidates {
			if !taken[c] {
				name = c
				break
			}
		}
		for n := 2; name == ""; n++ {
			c := insertBeforeExt(candidates[0], "~"+strconv.Itoa(n))
			if !taken[c] {
				name = c
			}
		}
		names[img.ID] = name
		taken[name] = true
	}
	return names
}
