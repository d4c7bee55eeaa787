package hostd

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// parseUUID accepts the canonical 8-4-4-4-12 hex form (either case) and
// returns it in lower case.
func parseUUID(s string) (string, error) {
	if len(s) != 36 {
		return "", badRequest("invalid uuid %q: want the canonical form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", badRequest("invalid uuid %q: want the canonical form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
			}
		default:
			if !isHex(c) {
				return "", badRequest("invalid uuid %q: want the canonical form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
			}
		}
	}
	return strings.ToLower(s), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func validateName(name string) error {
	if !nameRE.MatchString(name) || name == "." || name == ".." {
		return badRequest("invalid domain name %q: want 1-64 of A-Z a-z 0-9 . _ - (not . or ..)", name)
	}
	return nil
}

func validateHTTPURL(what, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return badRequest("invalid %s %q: want an http(s) URL", what, s)
	}
	if u.User != nil {
		return badRequest("invalid %s: credentials in the URL are not accepted", what)
	}
	return nil
}

// validateDomain checks a whole record with its secrets, after an add or an
// edit has been applied. It fills auth defaults.
func validateDomain(r *DomainRecord, sec secrets) error {
	if err := validateName(r.Name); err != nil {
		return err
	}
	if _, err := parseUUID(r.Name); err == nil && !strings.EqualFold(r.Name, r.UUID) {
		return badRequest("invalid domain name %q: a name must not be another UUID", r.Name)
	}
	if err := validateHTTPURL("url", r.URL); err != nil {
		return err
	}
	if r.Auth == "" {
		r.Auth = "none"
	}
	switch r.Auth {
	case "none":
		if sec.Token != "" || sec.Password != "" {
			return badRequest("auth none takes no token or password")
		}
	case "token":
		if sec.Token == "" {
			return badRequest("auth token needs a token")
		}
		if sec.Password != "" {
			return badRequest("auth token takes no password")
		}
	case "keystone":
		if err := validateHTTPURL("auth_url", r.AuthURL); err != nil {
			return err
		}
		if r.Username == "" || r.Project == "" || sec.Password == "" {
			return badRequest("auth keystone needs auth_url, username, password and project")
		}
		if sec.Token != "" {
			return badRequest("auth keystone takes no token")
		}
		if r.UserDomain == "" {
			r.UserDomain = "Default"
		}
		if r.ProjectDomain == "" {
			r.ProjectDomain = "Default"
		}
	default:
		return badRequest("invalid auth %q: want none, token or keystone", r.Auth)
	}
	if r.Auth != "keystone" && (r.AuthURL != "" || r.Username != "" || r.Project != "") {
		return badRequest("auth_url, username and project go with auth keystone only")
	}
	if r.Auth != "keystone" {
		r.UserDomain, r.ProjectDomain = "", ""
	}
	if r.CAFile != "" && r.Insecure {
		return badRequest("ca_file and insecure exclude each other")
	}
	if r.CAFile != "" && !filepath.IsAbs(r.CAFile) {
		return badRequest("ca_file %q must be an absolute path", r.CAFile)
	}
	if r.Mountpoint != "" && !filepath.IsAbs(r.Mountpoint) {
		return badRequest("mountpoint %q must be an absolute path", r.Mountpoint)
	}
	return nil
}
