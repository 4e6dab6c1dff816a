"""eBPF agent tracing Go gRPC/HTTP2 programs with uprobes."""

__version__ = "0.1.0"
