module grpcprog

go 1.22

require (
	google.golang.org/grpc v1.66.2
	pyhttp2probe/harness v0.0.0
	pyhttp2probe/harness/grpcharness v0.0.0
)

require (
	golang.org/x/net v0.26.0 // indirect
	golang.org/x/sys v0.21.0 // indirect
	golang.org/x/text v0.16.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240604185151-ef581f913117 // indirect
	google.golang.org/protobuf v1.34.1 // indirect
)

// The test harness modules, kept in tests/go/harness; tests/gobuild.py copies them to
// the same place relative to this file.
replace (
	pyhttp2probe/harness => ../../harness
	pyhttp2probe/harness/grpcharness => ../../harness/grpcharness
)
