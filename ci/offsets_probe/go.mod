module offsetsprobe

go 1.22
