module calltarget

go 1.26
