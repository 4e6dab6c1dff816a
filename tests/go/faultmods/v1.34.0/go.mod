// grpcmethods (tests/go/grpcmethods) pinned to grpc-go v1.34.0: older than every version in
// pyhttp2probe/data/offsets_table.json, so a stripped build of it has no offsets the agent
// could trust (tests/test_service_faults.py). Not under grpcmods/: that holds the
// supported pins every accuracy test runs against.
module grpcmethods

go 1.20

require google.golang.org/grpc v1.34.0

require (
	github.com/golang/protobuf v1.4.2 // indirect
	golang.org/x/net v0.0.0-20190311183353-d8887717615a // indirect
	golang.org/x/sys v0.0.0-20190215142949-d0b11bdaac8a // indirect
	golang.org/x/text v0.3.0 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013 // indirect
	google.golang.org/protobuf v1.25.0 // indirect
)
