package glance

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

func TestBodySnippet(t *testing.T) {
	// What Glance's webob answers for some errors.
	webob := `<html>
 <head>
  <title>400 Bad Request</title>
 </head>
 <body>
  <h1>400 Bad Request</h1>
  Invalid   Range header &quot;bytes=9-3&quot;.<br /><br />



 </body>
</html>`
	long := strings.Repeat("é", 300)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"plain", "  no such image\n", "no such image"},
		{"keystone json", `{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}`,
			"Unauthorized: The request you have made requires authentication."},
		{"keystone json, html in message", `{"error": {"message": "a < b and c > d"}}`, `a < b and c > d`},
		{"glance json", `{"message": "No image found with ID 1f\n\n\n   ", "code": "404 Not Found", "title": "Not Found"}`,
			"Not Found: No image found with ID 1f"},
		{"json without message kept", `{"images": []}`, `{"images": []}`},
		{"webob page", webob, `400 Bad Request Invalid Range header "bytes=9-3".`},
		{"doctype comment script", "<!DOCTYPE html><!-- x\n y --><HTML><Script>var a = 1 < 2;</Script><p>Gone</p>\n<p>for&nbsp;good &amp; all</p></HTML>",
			"Gone for good & all"},
		{"only tags", "<html><body></body></html>", ""},
		{"long is bounded", long, strings.Repeat("é", 200) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bodySnippet([]byte(tt.in))
			if got != tt.want {
				t.Errorf("bodySnippet = %q\nwant         %q", got, tt.want)
			}
			if strings.ContainsAny(got, "\n\r\t") || !utf8.ValidString(got) {
				t.Errorf("bodySnippet = %q: not one valid line", got)
			}
		})
	}
}

// An HTML error page reaches the message as one readable line.
func TestHTTPErrorHTMLBody(t *testing.T) {
	g := newFakeGlance(t)
	img := g.add("x", randomBytes(1000, 31))
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<html>\n <head>\n  <title>403 Forbidden</title>\n </head>\n <body>\n  <h1>403 Forbidden</h1>\n  Not for you.<br /><br />\n\n </body>\n</html>")
		return true
	})
	c, err := New(context.Background(), fastConfig(g.srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, errGet := c.Get(context.Background(), img.ID)
	src := c.Source("d", img)
	closeSource(t, src)
	_, errRead := src.ReadAt(context.Background(), make([]byte, 10), 0)
	for what, err := range map[string]error{"get": errGet, "read": errRead} {
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "<>\n") || !strings.Contains(msg, "403 Forbidden Not for you.") {
			t.Errorf("%s: message %q, want the page's text on one line", what, msg)
		}
	}
}

// AuthFailed tells a refusal of the credentials (by Glance or by Keystone,
// at the first authentication or at a re-authentication) from an outage.
func TestAuthFailed(t *testing.T) {
	ctx := context.Background()
	g := newFakeGlance(t)
	img := g.add("x", randomBytes(1000, 32))
	k := newFakeKeystone(t, g, "right", time.Hour)
	// Keystone behind a switch: refusing answers 401 as if the password
	// had been changed there.
	var refuse atomic.Bool
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			http.Error(w, `{"error":{"code":401,"title":"Unauthorized"}}`, http.StatusUnauthorized)
			return
		}
		httputil.NewSingleHostReverseProxy(mustParseURL(t, k.srv.URL)).ServeHTTP(w, r)
	}))
	t.Cleanup(ks.Close)
	keystone := func(pw string) Config {
		cfg := fastConfig(g.srv.URL)
		cfg.Auth = Auth{Type: AuthKeystone, AuthURL: ks.URL + "/v3", Username: "admin", Password: pw, Project: "admin"}
		return cfg
	}

	_, errBadPassword := New(ctx, keystone("wrong"), nil)

	c, err := New(ctx, keystone("right"), nil)
	if err != nil {
		t.Fatal(err)
	}
	refuse.Store(true)
	g.allowToken(k.lastToken(), false) // the token expires; re-authentication is refused
	_, errReauthList := c.List(ctx)
	src := c.Source("d", img)
	closeSource(t, src)
	_, errReauthRead := src.ReadAt(ctx, make([]byte, 10), 0)

	tok := fastConfig(g.srv.URL)
	tok.Auth = Auth{Type: AuthToken, Token: "stale"}
	ct, err := New(ctx, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, errToken := ct.List(ctx)
	cn, err := New(ctx, fastConfig(g.srv.URL), nil) // no auth, but Glance wants one
	if err != nil {
		t.Fatal(err)
	}
	_, errNone := cn.List(ctx)

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html><body>503 Service Unavailable</body></html>", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	cd, err := New(ctx, fastConfig(down.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err503 := cd.List(ctx)
	ks.Close() // Keystone gone: no answer at all
	_, errKeystoneDown := New(ctx, keystone("right"), nil)
	_, errRefused := New(ctx, Config{URL: "http://127.0.0.1:1", Auth: Auth{Type: AuthKeystone,
		AuthURL: "http://127.0.0.1:1/v3", Username: "a", Password: "b", Project: "c"}}, nil)

	for _, tt := range []struct {
		what string
		err  error
		want bool
	}{
		{"keystone refuses the password", errBadPassword, true},
		{"keystone refuses the re-authentication of a list", errReauthList, true},
		{"keystone refuses the re-authentication of a read", errReauthRead, true},
		{"glance refuses a fixed token", errToken, true},
		{"glance wants auth", errNone, true},
		{"glance answers 503", err503, false},
		{"keystone is down", errKeystoneDown, false},
		{"nothing listens", errRefused, false},
		{"no error", nil, false},
	} {
		if tt.want && tt.err == nil {
			t.Errorf("%s: no error", tt.what)
			continue
		}
		if got := AuthFailed(tt.err); got != tt.want {
			t.Errorf("%s: AuthFailed(%v) = %v, want %v", tt.what, tt.err, got, tt.want)
		}
		if tt.err != nil && strings.Contains(tt.err.Error(), "right") {
			t.Errorf("%s: the password leaks: %v", tt.what, tt.err)
		}
	}
}

func mustParseURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
