module offsetsprobe

go 1.17
