package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names Provision creates.
const (
	ProjectAlpha   = "alpha"
	ProjectBeta    = "beta"
	ProjectService = "service"

	UserAdminAlpha  = "admin-alpha"
	UserMemberAlpha = "member-alpha"
	UserReaderAlpha = "reader-alpha"
	UserMemberBeta  = "member-beta"
	UserNeutron     = "neutron" // the service user

	RoleService = "service"

	NetworkServiceType = "network"
	NetworkServiceName = "neutron"
)

// User is a provisioned user.
type User struct {
	Name     string
	ID       string
	Password string
	// Project is the user's default project and the one its roles are on.
	Project Project
	// Roles are the roles assigned on Project; tokens carry their implied
	// roles too (admin: member and reader; member: reader).
	Roles []string
}

// Credentials are u's, scoped to u.Project.
func (u User) Credentials() Credentials {
	return Credentials{Username: u.Name, Password: u.Password, Project: u.Project.Name}
}

// Cloud is what Provision created.
type Cloud struct {
	AuthURL string // Keystone's v3 API
	Region  string
	// CACert, when set, is the CA file clouds.yaml names (cacert) for a
	// network endpoint served over https by a private CA.
	CACert string

	Alpha, Beta, Service Project

	Admin       User // admin on alpha
	MemberAlpha User // member on alpha
	ReaderAlpha User // reader on alpha
	MemberBeta  User // member on beta
	// Neutron is the service user: admin and service on project
	// "service", so it may validate other users' tokens (Keystone 22's
	// identity:validate_token allows admin or service) as
	// keystonemiddleware's service user does.
	Neutron User
}

// Users are all of c's users.
func (c *Cloud) Users() []User {
	return []User{c.Admin, c.MemberAlpha, c.ReaderAlpha, c.MemberBeta, c.Neutron}
}

// Provision creates projects alpha, beta and service, role service, and the
// users of Cloud with generated passwords and their roles; if networkURL is
// not "", it registers the network service at networkURL (SetNetworkURL).
// Running it again finds what exists and gives the users new passwords.
func (k *Keystone) Provision(ctx context.Context, networkURL string) (*Cloud, error) {
	began := time.Now()
	c, err := k.AdminClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("local keystone: provisioning: %w", err)
	}
	cloud := &Cloud{AuthURL: k.IdentityURL(), Region: Region}
	if err := provision(ctx, c, cloud); err != nil {
		return nil, fmt.Errorf("local keystone: provisioning: %w", err)
	}
	if networkURL != "" {
		if err := setNetworkURL(ctx, c, networkURL); err != nil {
			return nil, fmt.Errorf("local keystone: provisioning: %w", err)
		}
	}
	k.log.Info("keystone provisioned", "network_url", networkURL, "elapsed", time.Since(began).Round(time.Millisecond))
	return cloud, nil
}

// provision makes cloud's projects, roles and users, listing each kind
// once rather than looking each thing up: Keystone has one worker, and
// every request counts.
func provision(ctx context.Context, c *Client, cloud *Cloud) error {
	projects, err := c.names(ctx, "project", "/projects?domain_id="+DomainID)
	if err != nil {
		return err
	}
	for _, p := range []struct {
		dst  *Project
		name string
	}{{&cloud.Alpha, ProjectAlpha}, {&cloud.Beta, ProjectBeta}, {&cloud.Service, ProjectService}} {
		id, ok := projects[p.name]
		if !ok {
			if id, err = c.create(ctx, "project", "/projects", projectBody(p.name)); err != nil {
				return err
			}
		}
		*p.dst = Project{Name: p.name, ID: id}
	}
	roles, err := c.names(ctx, "role", "/roles")
	if err != nil {
		return err
	}
	for _, r := range []string{"admin", "member", "reader", RoleService} {
		if _, ok := roles[r]; !ok {
			if roles[r], err = c.create(ctx, "role", "/roles", roleBody(r)); err != nil {
				return err
			}
		}
	}
	users, err := c.names(ctx, "user", "/users?domain_id="+DomainID)
	if err != nil {
		return err
	}
	for _, u := range []struct {
		dst     *User
		name    string
		project Project
		roles   []string
	}{
		{&cloud.Admin, UserAdminAlpha, cloud.Alpha, []string{"admin"}},
		{&cloud.MemberAlpha, UserMemberAlpha, cloud.Alpha, []string{"member"}},
		{&cloud.ReaderAlpha, UserReaderAlpha, cloud.Alpha, []string{"reader"}},
		{&cloud.MemberBeta, UserMemberBeta, cloud.Beta, []string{"member"}},
		{&cloud.Neutron, UserNeutron, cloud.Service, []string{"admin", RoleService}},
	} {
		pw, err := randomPassword()
		if err != nil {
			return fmt.Errorf("password for %s: %w", u.name, err)
		}
		id, err := c.setUser(ctx, users[u.name], u.name, pw, u.project.ID)
		if err != nil {
			return err
		}
		for _, r := range u.roles {
			if err := c.AssignRole(ctx, u.project.ID, id, roles[r]); err != nil {
				return err
			}
		}
		*u.dst = User{Name: u.name, ID: id, Password: pw, Project: u.project, Roles: u.roles}
	}
	return nil
}

// SetNetworkURL registers the network service (type network, name
// neutron) if missing and points its public, internal and admin endpoints in
// RegionOne at u; u == "" removes those endpoints. Tests use it to point the
// catalog at a server started after Provision.
func (k *Keystone) SetNetworkURL(ctx context.Context, u string) error {
	c, err := k.AdminClient(ctx)
	if err == nil {
		err = setNetworkURL(ctx, c, u)
	}
	if err != nil {
		return fmt.Errorf("local keystone: network endpoints: %w", err)
	}
	k.log.Info("keystone network endpoints set", "network_url", u)
	return nil
}

func setNetworkURL(ctx context.Context, c *Client, u string) error {
	id, err := c.EnsureService(ctx, NetworkServiceType, NetworkServiceName)
	if err != nil {
		return err
	}
	return c.SetEndpoints(ctx, id, Region, u)
}

// Clouds in the clouds.yaml WriteCloudsYAML writes.
const (
	CloudAdmin      = "l3ha-admin"
	CloudMember     = "l3ha-member"
	CloudReader     = "l3ha-reader"
	CloudMemberBeta = "l3ha-member-beta"
)

// WriteCloudsYAML writes a clouds.yaml (mode 0600: it holds passwords)
// with clouds l3ha-admin (Admin), l3ha-member (MemberAlpha), l3ha-reader
// (ReaderAlpha) and l3ha-member-beta (MemberBeta), for the openstack CLI,
// gophercloud and openstacksdk.
func (c *Cloud) WriteCloudsYAML(path string) error {
	var b strings.Builder
	b.WriteString("# Written by l3ha (internal/keystone/local).\nclouds:\n")
	for _, e := range []struct {
		name string
		u    User
	}{{CloudAdmin, c.Admin}, {CloudMember, c.MemberAlpha}, {CloudReader, c.ReaderAlpha}, {CloudMemberBeta, c.MemberBeta}} {
		fmt.Fprintf(&b, "  %s:\n", e.name)
		b.WriteString("    auth:\n")
		for _, kv := range [][2]string{
			{"auth_url", c.AuthURL},
			{"username", e.u.Name},
			{"password", e.u.Password},
			{"project_name", e.u.Project.Name},
			{"user_domain_name", Domain},
			{"project_domain_name", Domain},
		} {
			fmt.Fprintf(&b, "      %s: %s\n", kv[0], yamlString(kv[1]))
		}
		if c.CACert != "" {
			fmt.Fprintf(&b, "    cacert: %s\n", yamlString(c.CACert))
		}
		fmt.Fprintf(&b, "    region_name: %s\n", yamlString(c.Region))
		b.WriteString("    identity_api_version: 3\n")
		b.WriteString("    interface: public\n")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := writeFileAtomic(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// yamlString quotes s as a YAML double-quoted scalar (JSON's string syntax
// is a subset of it).
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
