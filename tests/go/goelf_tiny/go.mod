module goelftiny

go 1.16
