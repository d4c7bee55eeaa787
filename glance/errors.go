package glance

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/gophercloud/gophercloud/v2"
)

// Sentinel errors. Test with errors.Is; they arrive wrapped with what was
// being done.
var (
	// ErrNotFound matches any *HTTPError for a 404 or 410 (image gone).
	ErrNotFound = errors.New("not found")
	// ErrTokenRejected means Glance answered 401 to a fixed token.
	ErrTokenRejected = errors.New("token rejected (401); a fixed token cannot be renewed")
	// ErrUnauthorized means Glance answered 401 without a fixed token (no
	// auth configured, or still 401 after a Keystone re-authentication).
	ErrUnauthorized = errors.New("unauthorized (401)")
	// ErrBodyConsumed means an upload got a 401 after part of its body was
	// sent; the body cannot be sent again, so the upload is not retried.
	ErrBodyConsumed = errors.New("upload body already consumed; not retried")
	// ErrRangeUnsupported means the store behind the endpoint cannot serve
	// byte ranges (400 to a ranged GET, or 200 with the whole body).
	ErrRangeUnsupported = errors.New("byte ranges not supported")
	// ErrTruncated means a body ended before the end of the asked range.
	ErrTruncated = errors.New("body truncated")
	// ErrBadContentRange means a 206 answered a different range than asked.
	ErrBadContentRange = errors.New("unexpected Content-Range")
	// ErrSizeMismatch means the server reports another size than expected:
	// the bytes changed under us, so nothing read is trusted.
	ErrSizeMismatch = errors.New("size differs from the image record")
	// ErrIdleTimeout means a body delivered no byte for the idle timeout.
	ErrIdleTimeout error = timeoutError("body stalled longer than the idle timeout")
	// ErrNoAnswer means Glance did not answer an upload within
	// UploadFinishTimeout after its last byte.
	ErrNoAnswer error = timeoutError("no answer within the upload finish timeout")
	// ErrUnknownSize means an HTTP source told neither Content-Range total
	// nor Content-Length; give the size in the config.
	ErrUnknownSize = errors.New("size unknown: no Content-Range total and no Content-Length")
	// ErrClosed means the source was closed.
	ErrClosed = errors.New("source closed")
)

// timeoutError is a sentinel that reports Timeout() true, so callers can
// test for it with a local interface.
type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (e timeoutError) Timeout() bool { return true }

// HTTPError is an unexpected HTTP status from Glance or an HTTP source.
// Other packages test it with errors.As and a local interface
// (NotFound() bool, Timeout() bool) without importing glance.
type HTTPError struct {
	Op     string // what was being done, e.g. "get image 1234"
	Status int
	Body   string // start of the response body, for the log
	Err    error  // a sentinel such as ErrTokenRejected, if one applies
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d %s", e.Op, e.Status, http.StatusText(e.Status))
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": %s", e.Body)
	}
	return b.String()
}

func (e *HTTPError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) true for a 404 or 410.
func (e *HTTPError) Is(target error) bool { return target == ErrNotFound && e.NotFound() }

// NotFound reports whether the resource is missing or gone.
func (e *HTTPError) NotFound() bool {
	return e.Status == http.StatusNotFound || e.Status == http.StatusGone
}

// Timeout reports whether the server said it timed out.
func (e *HTTPError) Timeout() bool {
	return e.Status == http.StatusRequestTimeout || e.Status == http.StatusGatewayTimeout
}

// Conflict reports a 409 (e.g. an upload to an image that is not queued).
func (e *HTTPError) Conflict() bool { return e.Status == http.StatusConflict }

// retryable reports whether status is worth another attempt.
func retryableStatus(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
}

// HTML that bodySnippet drops: blocks whose text is not the message (the
// head repeats the h1 as title), then any tag or comment.
var (
	htmlBlocks = regexp.MustCompile(`(?is)<(head|script|style)\b.*?</(head|script|style)\s*>|<!--.*?-->`)
	htmlTags   = regexp.MustCompile(`<[!/?]?[a-zA-Z][^<>]*>`)
)

// bodySnippet makes a response body one readable line for an error
// message: HTML error pages (webob's) lose their tags and entities,
// whitespace is collapsed, and the result is at most 200 characters.
func bodySnippet(b []byte) string {
	const max = 200
	s := string(b)
	if msg, ok := jsonMessage(b); ok {
		s = msg
	} else if htmlTags.MatchString(s) {
		s = htmlBlocks.ReplaceAllString(s, " ")
		s = htmlTags.ReplaceAllString(s, " ")
		s = html.UnescapeString(s)
	}
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return s
}

// jsonMessage is the message of a JSON error body: Glance's
// {"message": ..., "title": ...} or Keystone's {"error": {"message": ...}}.
// Glance pads its messages with newlines.
func jsonMessage(b []byte) (string, bool) {
	type body struct {
		Message string `json:"message"`
		Title   string `json:"title"`
	}
	var v struct {
		body
		Error *body `json:"error"`
	}
	if json.Unmarshal(b, &v) != nil {
		return "", false
	}
	m := v.body
	if m.Message == "" && v.Error != nil {
		m = *v.Error
	}
	if m.Message == "" {
		return "", false
	}
	if m.Title != "" && !strings.HasPrefix(m.Message, m.Title) {
		return m.Title + ": " + m.Message, true
	}
	return m.Message, true
}

// fromGophercloud turns a gophercloud error into ours, keeping the status.
// Gophercloud messages include the URL, which carries no secret; tokens are
// only ever in headers.
func fromGophercloud(op string, err error, unauthorized error) error {
	if err == nil {
		return nil
	}
	// gophercloud returns this one as a pointer.
	var reauth gophercloud.ErrUnableToReauthenticate
	var preauth *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &preauth) && preauth != nil {
		reauth = *preauth
	}
	if reauth.ErrReauth != nil || errors.As(err, &reauth) {
		if AuthFailed(reauth.ErrReauth) {
			return fmt.Errorf("%s: %w; keystone re-authentication failed: %w", op, unauthorized, reauth.ErrReauth)
		}
		return fmt.Errorf("%s: re-authentication failed: %w", op, reauth.ErrReauth)
	}
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		he := &HTTPError{Op: op, Status: ue.Actual, Body: bodySnippet(ue.Body)}
		if ue.Actual == http.StatusUnauthorized {
			he.Body = ""
			he.Err = unauthorized
		}
		return he
	}
	return fmt.Errorf("%s: %w", op, err)
}

// AuthFailed reports whether err means Glance or Keystone refused the
// credentials: a 401 that a re-authentication did not cure, a rejected
// fixed token, or Keystone answering 401 to the password. An outage of
// either is not one.
func AuthFailed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrTokenRejected) {
		return true
	}
	// Keystone's answer comes as gophercloud's error, by value or by
	// pointer; a failed re-authentication does not unwrap to it.
	var ue gophercloud.ErrUnexpectedResponseCode
	var pue *gophercloud.ErrUnexpectedResponseCode
	var reauth gophercloud.ErrUnableToReauthenticate
	var preauth *gophercloud.ErrUnableToReauthenticate
	switch {
	case errors.As(err, &ue):
		return ue.Actual == http.StatusUnauthorized
	case errors.As(err, &pue) && pue != nil:
		return pue.Actual == http.StatusUnauthorized
	case errors.As(err, &reauth):
		return AuthFailed(reauth.ErrReauth)
	case errors.As(err, &preauth) && preauth != nil:
		return AuthFailed(preauth.ErrReauth)
	}
	return false
}
