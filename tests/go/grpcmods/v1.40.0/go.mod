module grpcprog

go 1.22

require (
	google.golang.org/grpc v1.40.0
	pyhttp2probe/harness v0.0.0
	pyhttp2probe/harness/grpcharness v0.0.0
)

require (
	github.com/golang/protobuf v1.4.3 // indirect
	golang.org/x/net v0.0.0-20200822124328-c89045814202 // indirect
	golang.org/x/sys v0.0.0-20200323222414-85ca7c5b95cd // indirect
	golang.org/x/text v0.3.0 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013 // indirect
	google.golang.org/protobuf v1.25.0 // indirect
)

// The test harness modules, kept in tests/go/harness; tests/gobuild.py copies them to
// the same place relative to this file.
replace (
	pyhttp2probe/harness => ../../harness
	pyhttp2probe/harness/grpcharness => ../../harness/grpcharness
)
