// goelf_tiny: the smallest Go program with DWARF, a pclntab and build info; the seed
// for the goelf hostile-input tests (small, so thousands of mutated copies stay cheap).
package main

import (
	"fmt"
	"os"
)

type point struct {
	x, y int
	name string
}

func (p *point) String() string { return fmt.Sprintf("%s(%d,%d)", p.name, p.x, p.y) }

func main() {
	p := &point{1, 2, os.Args[0]}
	fmt.Println(p)
}
