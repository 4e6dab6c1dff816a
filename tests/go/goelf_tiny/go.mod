module goelftiny

go 1.22
