module grpcprog

go 1.22

require (
	google.golang.org/grpc v1.58.3
	pyhttp2probe/harness v0.0.0
	pyhttp2probe/harness/grpcharness v0.0.0
)

require (
	github.com/golang/protobuf v1.5.3 // indirect
	golang.org/x/net v0.12.0 // indirect
	golang.org/x/sys v0.10.0 // indirect
	golang.org/x/text v0.11.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20230711160842-782d3b101e98 // indirect
	google.golang.org/protobuf v1.31.0 // indirect
)

// The test harness modules, kept in tests/go/harness; tests/gobuild.py copies them to
// the same place relative to this file.
replace (
	pyhttp2probe/harness => ../../harness
	pyhttp2probe/harness/grpcharness => ../../harness/grpcharness
)
