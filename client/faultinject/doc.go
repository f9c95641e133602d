// Package faultinject provides an http.RoundTripper that loses, duplicates,
// delays and holds RPCs on purpose, so that tests can reproduce the network
// faults dlm must survive (lost requests, lost responses, duplicates, late
// arrivals) deterministically and without sleeping.
//
// Faults are chosen per RPC method (the last element of the request path,
// such as "AppendFile") and per call (the nth call of that method, counted
// from 1). Because it works on HTTP requests, it serves the Connect, gRPC and
// gRPC-Web protocols alike.
//
// A delayed or held request whose caller gives up in the meantime is still
// sent later, detached from the caller, exactly as a packet stuck in the
// network would still arrive: that is what makes late duplicates testable.
package faultinject
