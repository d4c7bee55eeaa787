package glance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
)

// Auth types.
const (
	AuthNone     = "none"
	AuthToken    = "token"
	AuthKeystone = "keystone"
)

// tokenMargin is how long a Keystone token must still be valid before we
// send it. Glance checks the token only when a request starts, so a
// minute is plenty even for a long upload.
const tokenMargin = time.Minute

// errRenewed says a 401 was answered by getting a new token: the request
// may be sent once more.
var errRenewed = errors.New("token renewed after 401")

// authorizer supplies the X-Auth-Token of the requests this package builds
// itself (data reads, uploads); gophercloud handles its own.
type authorizer interface {
	// token returns the token to send ("" for none), valid for at least
	// margin when it can be renewed.
	token(ctx context.Context, margin time.Duration) (string, error)
	// rejected is told that tok got a 401. It returns errRenewed when a
	// new token is ready, or the error to report.
	rejected(ctx context.Context, tok string) error
}

type noAuth struct{}

func (noAuth) token(context.Context, time.Duration) (string, error) { return "", nil }
func (noAuth) rejected(context.Context, string) error               { return ErrUnauthorized }

type fixedToken string

func (t fixedToken) token(context.Context, time.Duration) (string, error) { return string(t), nil }
func (fixedToken) rejected(context.Context, string) error                 { return ErrTokenRejected }

// keystoneAuth renews through gophercloud's ReauthFunc, which serialises
// concurrent re-authentications and skips one when another caller already
// replaced the rejected token.
type keystoneAuth struct{ pc *gophercloud.ProviderClient }

func (k keystoneAuth) token(ctx context.Context, margin time.Duration) (string, error) {
	tok := k.pc.Token()
	exp := k.pc.TokenExpiry()
	if tok != "" && (exp.IsZero() || time.Until(exp) > margin) {
		return tok, nil
	}
	if err := k.pc.Reauthenticate(ctx, tok); err != nil {
		return "", fmt.Errorf("keystone re-authentication: %w", err)
	}
	return k.pc.Token(), nil
}

func (k keystoneAuth) rejected(ctx context.Context, tok string) error {
	if err := k.pc.Reauthenticate(ctx, tok); err != nil {
		return fmt.Errorf("%w; keystone re-authentication failed: %w", ErrUnauthorized, err)
	}
	return errRenewed
}

// keystoneProvider authenticates with a Keystone v3 password and keeps the
// credentials in gophercloud's re-authentication closure.
func keystoneProvider(ctx context.Context, a Auth, hc *http.Client) (*gophercloud.ProviderClient, error) {
	pc, err := openstack.NewClient(a.AuthURL)
	if err != nil {
		return nil, fmt.Errorf("glance: keystone URL %q: %w", a.AuthURL, err)
	}
	pc.HTTPClient = *hc
	pc.UserAgent.Prepend("glancegw")
	pc.ReauthBeforeTokenExpiration = tokenMargin
	opts := &gophercloud.AuthOptions{
		IdentityEndpoint: a.AuthURL,
		Username:         a.Username,
		Password:         a.Password,
		DomainName:       a.UserDomain,
		AllowReauth:      true,
		Scope: &gophercloud.AuthScope{
			ProjectName: a.Project,
			DomainName:  a.ProjectDomain,
		},
	}
	if err := openstack.AuthenticateV3(ctx, pc, opts, gophercloud.EndpointOpts{}); err != nil {
		return nil, fmt.Errorf("glance: keystone authentication at %s as %s: %w", a.AuthURL, a.Username, err)
	}
	return pc, nil
}
