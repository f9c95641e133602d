// The generated API of dlm (protoc-gen-es, committed under gen/ts), re-exported
// so that users of this package need not know where it lives.
export * from "../../../gen/ts/dlm/v1/dlm_pb.js";
export * from "../../../gen/ts/dlm/v1/reason_pb.js";
