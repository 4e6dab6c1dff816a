// Package harness is what every test workload under tests/go shares: a CLOCK_MONOTONIC
// clock comparable with bpf_ktime_get_ns, the ground-truth JSON-lines writer, and the
// stdin handshake (-wait-start / -hold) that tests/truth.py drives.
//
// Workloads require it as pyhttp2probe/harness with a replace to this directory (relative
// to their go.mod); tests/gobuild.py copies it next to the build at that same place. It
// uses the standard library only, so requiring it changes no workload's pins.
package harness
