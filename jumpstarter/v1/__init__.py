"""Generated protobuf and gRPC modules of jumpstarter.v1 (see protos/)."""
