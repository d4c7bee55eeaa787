package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/glancegw/glancegw/glance"
)

// A refusal of the credentials is its own kind (auth_failed, 502), told
// apart from an outage, naming the domain and how to set new credentials.
func TestAuthFailedAnswers(t *testing.T) {
	e := newTestEnv(t)
	// Keystone refuses the password of domains on http://ks-glance; the
	// token domain's Glance refuses its token once connected.
	rejected := fmt.Errorf("glance: keystone authentication at http://ks:5000/v3 as u: %w",
		&glance.HTTPError{Op: "POST", Status: 401, Err: glance.ErrUnauthorized})
	e.cfg.connect = func(ctx context.Context, cfg glance.Config, log *slog.Logger) (backend, error) {
		if cfg.URL == "http://ks-glance:9292" {
			return nil, rejected
		}
		return e.net.connect(ctx, cfg, log)
	}
	tg := e.net.glance("http://tok-glance:9292")
	tg.setListErr(&glance.HTTPError{Op: "list images", Status: 401, Err: glance.ErrTokenRejected})
	e.net.glance("http://open-glance:9292").setListErr(&glance.HTTPError{Op: "list images", Status: 401, Err: glance.ErrUnauthorized})
	r := e.start()
	for _, s := range []DomainSpec{
		{Name: "ks", URL: "http://ks-glance:9292", Auth: "keystone", AuthURL: "http://ks:5000/v3", Username: "u",
			Project: "p", Password: testPassword},
		{Name: "tok", URL: "http://tok-glance:9292", Auth: "token", Token: testToken},
		{Name: "open", URL: "http://open-glance:9292"},
		{Name: "down", URL: "http://down-glance:9292"},
	} {
		if _, err := r.c.AddDomain(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		domain string
		auth   bool
		wants  []string
	}{
		{"ks", true, []string{"domain ks", "glancegw domain edit ks --password-file"}},
		{"tok", true, []string{"domain tok", "glancegw domain edit tok --token-file"}},
		{"open", true, []string{"domain open", "glancegw domain edit open", "--password-file"}},
		{"down", false, []string{"domain down", "connection refused"}},
	} {
		_, err := r.c.Images(ctx, tt.domain, true)
		var ae *APIError
		if !errors.As(err, &ae) {
			t.Fatalf("%s: %v, want an API error", tt.domain, err)
		}
		if tt.auth {
			if ae.Status != 502 || ae.Code != CodeAuthFailed || !errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: %d %s %q, want 502 %s", tt.domain, ae.Status, ae.Code, ae.Message, CodeAuthFailed)
			}
		} else if ae.Status != 503 || ae.Code != CodeUnavailable || errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: %d %s %q, want 503 %s", tt.domain, ae.Status, ae.Code, ae.Message, CodeUnavailable)
		}
		for _, w := range tt.wants {
			if !strings.Contains(ae.Message, w) {
				t.Errorf("%s: message %q lacks %q", tt.domain, ae.Message, w)
			}
		}
		for _, s := range []string{testPassword, testToken} {
			if strings.Contains(ae.Message, s) {
				t.Errorf("%s: message leaks a secret: %q", tt.domain, ae.Message)
			}
		}
		t.Logf("%s: %s", tt.domain, ae.Message)
		if d, _ := r.c.Domain(ctx, tt.domain); d.Error != ae.Message {
			t.Errorf("%s: domain error %q, want the same message", tt.domain, d.Error)
		}
	}
}

func TestClassifyAuthFailed(t *testing.T) {
	cause := &glance.HTTPError{Op: "get image x", Status: 401, Err: glance.ErrTokenRejected}
	for _, err := range []error{
		unavailable(cause, "domain a: get image x"),
		fmt.Errorf("import: %w", unavailable(fmt.Errorf("wrapped: %w", cause), "domain a: get image x")),
	} {
		if s, c := classify(err); s != 502 || c != CodeAuthFailed {
			t.Errorf("classify(%v) = %d %s, want 502 %s", err, s, c, CodeAuthFailed)
		}
		if !errors.Is(err, cause) || !strings.Contains(err.Error(), "glancegw domain edit") {
			t.Errorf("%q: cause or hint lost", err)
		}
	}
	ae := &APIError{Status: 502, Code: CodeAuthFailed, Message: "m"}
	if !errors.Is(ae, ErrAuthFailed) || errors.Is(ae, ErrUnavailable) {
		t.Errorf("APIError auth_failed: Is wrong")
	}
}
