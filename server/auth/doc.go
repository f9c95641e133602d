// Package auth decides who may call what: bearer tokens with a role each
// (admin > client > read), the node's admin token kept in its data folder,
// and one Connect interceptor that checks every call against a table of the
// role each procedure needs.
//
// Without client tokens only administration (membership changes and
// snapshots) needs a credential, so a local quick start works with no
// flags; with them (--auth-tokens) the lock API and reads need one too.
// Health checks and reflection stay anonymous in both modes: load balancers
// probe health without secrets, and reflection only describes the public
// API schema.
package auth
