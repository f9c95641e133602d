package lockstate

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	raftlogv1 "github.com/dlm/dlm/gen/go/dlm/raftlog/v1"
)

// TestCopyOutcome sets every field of an Outcome, so that a field added to
// the proto and forgotten in copyOutcome fails here.
func TestCopyOutcome(t *testing.T) {
	o := &raftlogv1.Outcome{}
	r := o.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		var v protoreflect.Value
		switch f.Kind() {
		case protoreflect.BoolKind:
			v = protoreflect.ValueOfBool(true)
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			v = protoreflect.ValueOfUint32(uint32(i + 1))
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			v = protoreflect.ValueOfUint64(uint64(i + 1))
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			v = protoreflect.ValueOfInt32(int32(i + 1))
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			v = protoreflect.ValueOfInt64(int64(i + 1))
		case protoreflect.EnumKind:
			v = protoreflect.ValueOfEnum(protoreflect.EnumNumber(i + 1))
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString("x")
		case protoreflect.BytesKind:
			v = protoreflect.ValueOfBytes([]byte("x"))
		default:
			t.Fatalf("Outcome.%s has kind %s: teach copyOutcome and this test", f.Name(), f.Kind())
		}
		if f.IsList() || f.IsMap() {
			t.Fatalf("Outcome.%s is a list or map: teach copyOutcome and this test", f.Name())
		}
		r.Set(f, v)
	}
	got := copyOutcome(o)
	if !proto.Equal(got, o) {
		t.Errorf("copyOutcome(%v) = %v", o, got)
	}
	if got == o {
		t.Error("copyOutcome returned its argument")
	}
	if copyOutcome(nil) != nil {
		t.Error("copyOutcome(nil) is not nil")
	}
}
