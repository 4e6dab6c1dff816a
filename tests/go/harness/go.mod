// The test workloads' shared harness (package harness): standard library only, so every
// workload module can require it without any pin changing. go 1.20: the oldest toolchain
// the tests build with (GOTOOLCHAIN=go1.20.14, h2mods/go1.20). The gRPC-only part needs
// grpc-go and is its own module: grpcharness/.
module pyhttp2probe/harness

go 1.20
