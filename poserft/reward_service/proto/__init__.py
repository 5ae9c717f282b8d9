"""Generated protobuf / gRPC code for the reward service; see generate.py."""
