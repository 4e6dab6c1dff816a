module h2urls

go 1.22

require (
	golang.org/x/net v0.35.0
	pyhttp2probe/harness v0.0.0
)

require golang.org/x/text v0.22.0 // indirect

// The test harness module, kept in tests/go/harness; testkit/gobuild.py copies it to the
// same place relative to this file.
replace pyhttp2probe/harness => ../harness
