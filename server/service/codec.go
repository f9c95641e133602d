package service

import (
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/dlm/dlm/server/metrics"
)

// The handlers' codecs are connect's own, except that a malformed request
// is described by its protobuf name ("malformed dlm.v1.InitRequest") rather
// than by a Go type of the server's ("unmarshal into *dlmv1.InitRequest").
// They time decoding and encoding for dlm_stage_seconds (m may be nil).
func codecOptions(m *metrics.Metrics) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(protoCodec{m: m}),
		connect.WithCodec(jsonCodec{name: "json", m: m}),
		connect.WithCodec(jsonCodec{name: "json; charset=utf-8", m: m}),
	}
}

var errNotProto = errors.New("not a protobuf message")

func malformed(m proto.Message, err error) error {
	return fmt.Errorf("malformed %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
}

type protoCodec struct{ m *metrics.Metrics }

func (protoCodec) Name() string { return "proto" }

func (protoCodec) IsBinary() bool { return true }

func (c protoCodec) Marshal(message any) ([]byte, error) {
	defer c.m.Since(metrics.Reply, time.Now())
	m, ok := message.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return proto.Marshal(m)
}

func (c protoCodec) MarshalAppend(dst []byte, message any) ([]byte, error) {
	defer c.m.Since(metrics.Reply, time.Now())
	m, ok := message.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c protoCodec) Unmarshal(data []byte, message any) error {
	defer c.m.Since(metrics.Decode, time.Now())
	m, ok := message.(proto.Message)
	if !ok {
		return errNotProto
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return malformed(m, err)
	}
	return nil
}

type jsonCodec struct {
	name string
	m    *metrics.Metrics
}

func (c jsonCodec) Name() string { return c.name }

func (c jsonCodec) Marshal(message any) ([]byte, error) {
	defer c.m.Since(metrics.Reply, time.Now())
	m, ok := message.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

func (c jsonCodec) MarshalAppend(dst []byte, message any) ([]byte, error) {
	defer c.m.Since(metrics.Reply, time.Now())
	m, ok := message.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c jsonCodec) Unmarshal(data []byte, message any) error {
	defer c.m.Since(metrics.Decode, time.Now())
	m, ok := message.(proto.Message)
	if !ok {
		return errNotProto
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	// Unknown fields are dropped, as connect does, so clients and servers of
	// different versions work together.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		return malformed(m, err)
	}
	return nil
}
