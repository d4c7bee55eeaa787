package nbd

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sentinel errors of the wire parsers and the session.
var (
	errShortRequest   = errors.New("short request header")
	errBadMagic       = errors.New("bad magic")
	errMalformed      = errors.New("malformed option data")
	errOptionTooBig   = errors.New("option data too large")
	errBadClientFlags = errors.New("unknown client flags")
	errAborted        = errors.New("client aborted negotiation")
	errPayloadTooBig  = errors.New("write payload too large")
)

// infoRequest is the data of NBD_OPT_INFO / NBD_OPT_GO: an export name and
// the NBD_INFO_* items the client asks for.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes: u32 name length, name, u16 count, count × u16.
func parseInfoRequest(data []byte) (infoRequest, error) {
	name, rest, err := takeString32(data)
	if err != nil {
		return infoRequest{}, err
	}
	if len(rest) < 2 {
		return infoRequest{}, fmt.Errorf("%w: missing info count", errMalformed)
	}
	n := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return infoRequest{}, fmt.Errorf("%w: %d info ids in %d bytes", errMalformed, n, len(rest))
	}
	r := infoRequest{name: name, infos: make([]uint16, n)}
	for i := range n {
		r.infos[i] = be.Uint16(rest[2*i:])
	}
	return r, nil
}

func (r infoRequest) wants(id uint16) bool {
	for _, v := range r.infos {
		if v == id {
			return true
		}
	}
	return false
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT: an export name and a list of queries.
type metaRequest struct {
	name    string
	queries []string
}

// parseMetaRequest decodes: u32 name length, name, u32 count, count ×
// (u32 length, query).
func parseMetaRequest(data []byte) (metaRequest, error) {
	name, rest, err := takeString32(data)
	if err != nil {
		return metaRequest{}, err
	}
	if len(rest) < 4 {
		return metaRequest{}, fmt.Errorf("%w: missing query count", errMalformed)
	}
	n := be.Uint32(rest)
	rest = rest[4:]
	// Each query needs at least its 4-byte length, so this bounds n
	// before we allocate for it.
	if uint64(n)*4 > uint64(len(rest)) {
		return metaRequest{}, fmt.Errorf("%w: %d queries in %d bytes", errMalformed, n, len(rest))
	}
	r := metaRequest{name: name, queries: make([]string, 0, n)}
	for range n {
		var q string
		q, rest, err = takeString32(rest)
		if err != nil {
			return metaRequest{}, err
		}
		r.queries = append(r.queries, q)
	}
	if len(rest) != 0 {
		return metaRequest{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(rest))
	}
	return r, nil
}

// takeString32 splits a u32-length-prefixed string off b and checks it is a
// spec string (valid UTF-8, no NUL, at most 4096 bytes).
func takeString32(b []byte) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("%w: missing string length", errMalformed)
	}
	n := be.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) {
		return "", nil, fmt.Errorf("%w: string of %d bytes in %d", errMalformed, n, len(b))
	}
	s := string(b[:n])
	if err := checkString(s); err != nil {
		return "", nil, err
	}
	return s, b[n:], nil
}

func checkString(s string) error {
	switch {
	case len(s) > maxStringLen:
		return fmt.Errorf("%w: string longer than %d bytes", errMalformed, maxStringLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: string is not UTF-8", errMalformed)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: string contains NUL", errMalformed)
	}
	return nil
}

// metaMatches reports whether query selects base:allocation, the only
// context we have. An empty query (LIST only) means "all contexts"; "base:"
// lists the whole base namespace. Other namespaces select nothing.
func metaMatches(query string, list bool) bool {
	if query == metaBaseName {
		return true
	}
	return list && (query == "" || query == "base:")
}
