package transfer

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// secretParams are query parameter names whose values are dropped from a
// URL shown to users (signed URLs, tokens).
var secretParams = []string{"token", "key", "secret", "signature", "sig", "password", "passwd", "auth",
	"credential", "x-amz-", "x-goog-", "temp_url_", "access"}

// RedactURL returns raw without userinfo and with the values of
// secret-looking query parameters replaced by "REDACTED". A URL that does
// not parse is reduced to its scheme and host, or to "(invalid URL)".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			lk := strings.ToLower(k)
			for _, s := range secretParams {
				if strings.Contains(lk, s) {
					q[k] = []string{"REDACTED"}
					break
				}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// CheckHTTPURL accepts only absolute http and https URLs with a host.
func CheckHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("transfer: invalid URL %q: %w", RedactURL(raw), ErrInvalid)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("transfer: URL scheme %q is not supported (only http and https): %w", u.Scheme, ErrInvalid)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("transfer: URL %q has no host: %w", RedactURL(raw), ErrInvalid)
	}
	if recordURLRE.MatchString(u.EscapedPath()) {
		// Its bytes are the record's JSON, not the image's.
		return nil, fmt.Errorf("transfer: URL %q names a Glance image record, not its data (add /file): %w", RedactURL(raw), ErrInvalid)
	}
	return u, nil
}

// recordURLRE matches the path of a Glance image record: .../v2/images/<id>.
var recordURLRE = regexp.MustCompile(`/v2/images/[^/]+/?$`)
