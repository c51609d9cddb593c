"""Hardware-in-the-loop test runtime: drivers served over gRPC, used from pytest."""
