"""The real-time path: a Structured Streaming job that updates recommendations seconds after behaviour."""
