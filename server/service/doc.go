// Package service adapts the node to the Connect API: thin handlers that
// translate messages, one function that maps node errors to Connect codes
// with a typed ErrorDetail, and the HTTP handler that serves Connect, gRPC and
// gRPC-Web on one port together with reflection, health checks and CORS.
package service
