package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/l3ha/l3ha/internal/keystone"
)

// Identity is who a request acts as.
type Identity struct {
	ProjectID string
	Admin     bool
	// ReadOnly is a reader: it may read what its project may read and
	// write nothing (Neutron's reader role).
	ReadOnly bool
}

// identityFor applies Neutron's default roles: admin is admin anywhere;
// member works in its project; a reader without member or admin only
// reads. Roles are case-insensitive; other roles act as members, as under
// Neutron's pre-"new defaults" policy.
func identityFor(project string, roles []string) Identity {
	has := func(name string) bool {
		for _, r := range roles {
			if strings.EqualFold(strings.TrimSpace(r), name) {
				return true
			}
		}
		return false
	}
	id := Identity{ProjectID: project, Admin: has("admin")}
	id.ReadOnly = !id.Admin && has("reader") && !has("member") && !has("_member_")
	return id
}

func splitRoles(roles string) []string { return strings.Split(roles, ",") }

// Authenticator turns a request into an Identity; a 401 *Error rejects it.
type Authenticator interface {
	Identify(r *http.Request) (Identity, error)
}

// challenger is an Authenticator that names, in its 401s, where clients
// authenticate (WWW-Authenticate).
type challenger interface{ WWWAuthenticate() string }

// NoAuth takes identity from headers, for labs and tests: X-Project-Id (or
// the legacy X-Tenant-Id) and X-Roles (comma separated, "admin" in any case
// makes an admin). A request with neither header is an admin acting in
// project DefaultProject.
type NoAuth struct{ DefaultProject string }

// Identify implements Authenticator.
func (n NoAuth) Identify(r *http.Request) (Identity, error) {
	project := r.Header.Get("X-Project-Id")
	if project == "" {
		project = r.Header.Get("X-Tenant-Id")
	}
	roles := r.Header.Get("X-Roles")
	if project == "" && roles == "" {
		return Identity{ProjectID: n.DefaultProject, Admin: true}, nil
	}
	return identityFor(project, splitRoles(roles)), nil
}

// TokenAuth maps static X-Auth-Token values to identities.
type TokenAuth struct{ tokens map[string]Identity }

// LoadTokenFile reads lines "TOKEN PROJECT_ID ROLE[,ROLE]"; blank lines and
// lines starting with # are ignored.
func LoadTokenFile(path string) (*TokenAuth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading token file: %w", err)
	}
	defer f.Close()
	t := &TokenAuth{tokens: map[string]Identity{}}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 3 {
			return nil, fmt.Errorf("token file %s line %d: want TOKEN PROJECT_ID ROLE[,ROLE]", path, line)
		}
		t.tokens[fields[0]] = identityFor(fields[1], splitRoles(fields[2]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading token file: %w", err)
	}
	if len(t.tokens) == 0 {
		return nil, fmt.Errorf("token file %s has no tokens", path)
	}
	return t, nil
}

// Identify implements Authenticator.
func (t *TokenAuth) Identify(r *http.Request) (Identity, error) {
	id, ok := t.tokens[r.Header.Get("X-Auth-Token")]
	if !ok {
		return Identity{}, errf(http.StatusUnauthorized, "HTTPUnauthorized", "Authentication required")
	}
	return id, nil
}

// TokenValidator says what a Keystone token stands for.
type TokenValidator interface {
	Validate(ctx context.Context, token string) (keystone.Token, error)
	WWWAuthenticate() string
}

// KeystoneAuth authenticates X-Auth-Token with Keystone, as
// keystonemiddleware does for neutron-server: an invalid, expired or
// revoked token is a 401, Keystone unreachable or too slow a 503.
type KeystoneAuth struct{ Validator TokenValidator }

// Identify implements Authenticator.
func (k KeystoneAuth) Identify(r *http.Request) (Identity, error) {
	token := strings.TrimSpace(r.Header.Get("X-Auth-Token"))
	if token == "" {
		return Identity{}, errf(http.StatusUnauthorized, "HTTPUnauthorized", "Authentication required")
	}
	t, err := k.Validator.Validate(r.Context(), token)
	var unavailable *keystone.UnavailableError
	switch {
	case errors.Is(err, keystone.ErrInvalidToken):
		return Identity{}, errf(http.StatusUnauthorized, "HTTPUnauthorized", "Authentication required")
	case errors.As(err, &unavailable):
		return Identity{}, errf(http.StatusServiceUnavailable, "HTTPServiceUnavailable", "The identity service cannot validate the token now; try again later.")
	case err != nil:
		return Identity{}, err
	}
	if t.ProjectID == "" {
		// Unscoped and domain-scoped tokens name no project to act in;
		// Neutron's resources all belong to one.
		return Identity{}, errf(http.StatusUnauthorized, "HTTPUnauthorized", "A project-scoped token is required")
	}
	return identityFor(t.ProjectID, t.Roles), nil
}

// WWWAuthenticate implements challenger.
func (k KeystoneAuth) WWWAuthenticate() string { return k.Validator.WWWAuthenticate() }
