package auth

import "fmt"

// Role is what a credential may do. Each role may do everything the roles
// below it may.
type Role int

const (
	// Anonymous is a call without a (known) token.
	Anonymous Role = iota
	// Read may read: Status, ReadFile, ListMembers.
	Read
	// Client may also hold sessions and take the lock.
	Client
	// Admin may also change membership and take snapshots.
	Admin
)

func (r Role) String() string {
	switch r {
	case Anonymous:
		return "anonymous"
	case Read:
		return "read"
	case Client:
		return "client"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole reads a role name as tokens files spell it.
func ParseRole(s string) (Role, error) {
	switch s {
	case "read":
		return Read, nil
	case "client":
		return Client, nil
	case "admin":
		return Admin, nil
	}
	return Anonymous, fmt.Errorf("unknown role %q (roles are admin, client, read)", s)
}
