// h2exec: standard library only (no go.sum). go 1.16 so the same source also builds with
// the go1.16.15 toolchain, the "Go older than 1.17" input of tests/test_service_faults.py.
module pyhttp2probe/h2exec

go 1.16
