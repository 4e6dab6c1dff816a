module pyhttp2probe/h2work

go 1.26.0

require golang.org/x/net v0.10.0

require golang.org/x/text v0.9.0 // indirect
