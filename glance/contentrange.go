package glance

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// contentRange is a parsed Content-Range response header (RFC 9110 14.4).
// Start and End are inclusive; Start is -1 for the unsatisfied form
// "bytes */TOTAL"; Total is -1 when the server sent "*".
type contentRange struct {
	Start, End, Total int64
}

var errContentRangeSyntax = errors.New("malformed Content-Range")

// parseContentRange parses "bytes A-B/T", "bytes A-B/*" and "bytes */T".
func parseContentRange(s string) (contentRange, error) {
	bad := func() (contentRange, error) {
		return contentRange{}, fmt.Errorf("%w: %q", errContentRangeSyntax, s)
	}
	unit, spec, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return bad()
	}
	rng, total, ok := strings.Cut(strings.TrimSpace(spec), "/")
	if !ok {
		return bad()
	}
	cr := contentRange{Start: -1, End: -1, Total: -1}
	if total != "*" {
		t, err := parseDigits(total)
		if err != nil {
			return bad()
		}
		cr.Total = t
	}
	if rng == "*" {
		if cr.Total < 0 {
			return bad() // "bytes */*" says nothing
		}
		return cr, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	start, err1 := parseDigits(a)
	end, err2 := parseDigits(b)
	if err1 != nil || err2 != nil || end < start || (cr.Total >= 0 && end >= cr.Total) {
		return bad()
	}
	cr.Start, cr.End = start, end
	return cr, nil
}

// parseDigits accepts only ASCII digits (no sign, no spaces) that fit an int64.
func parseDigits(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, errContentRangeSyntax
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errContentRangeSyntax
		}
	}
	return strconv.ParseInt(s, 10, 64)
}
