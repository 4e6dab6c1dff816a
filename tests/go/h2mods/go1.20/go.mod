module pyhttp2probe/h2work

go 1.20

require golang.org/x/net v0.24.0

require golang.org/x/text v0.14.0 // indirect
