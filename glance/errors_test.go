package glance

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
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
		{"json kept", `{"error": {"message": "a < b and c > d"}}`, `{"error": {"message": "a < b and c > d"}}`},
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
