// The gRPC workloads' shared part (package grpcharness): the raw-bytes codec and the
// op-status helper. A module of its own because it imports grpc-go: in the harness module,
// that requirement would enter the module graph of h2work, which has no grpc.
//
// It requires the oldest grpcmods pin, v1.40.0, so minimal version selection never moves
// a workload's grpc pin. Deliberately only that line, no indirect requirements and no
// go.sum: with module graph pruning (go >= 1.17 here and in every workload) a workload
// loads just this line, so its build list (go list -m all) and its go.sum stay exactly
// as they were. go mod tidy here would add v1.40.0's own deps (the old monolithic
// google.golang.org/genproto, protobuf v1.25.0) to every pin's module graph.
module pyhttp2probe/harness/grpcharness

go 1.20

require google.golang.org/grpc v1.40.0
