"""Find RET and CALL instructions in a function's bytes (x86-64), for return and call-site
probes.

Go moves goroutine stacks, so uretprobes are unsafe; the agent puts a plain uprobe on
every RET instead. A probe on a CALL instruction runs only on the path that makes that
call, with the callee's arguments already in their ABI registers. The caller passes
exactly the function's bytes (size from symtab or pclntab), so the int3 padding after the
function is never decoded.
"""

from __future__ import annotations

from typing import Any

from .errors import GoBinaryError

_RET_MNEMONICS = frozenset({"ret", "retq", "ret far", "retf"})


def make_disassembler() -> Any:
    """One capstone handle, reused for every function of a plan (creating one is slow)."""
    import capstone  # local: a cached plan load must not pay for importing capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = False
    md.skipdata = True  # keep walking over bytes capstone cannot decode
    return md


def ret_offsets(code: bytes, base: int, md: Any = None) -> list[int]:
    """Offsets (base + position) of every RET in `code`, decoded linearly from its start.

    A leading ENDBR64 (CET builds) decodes as one instruction, so no special casing is
    needed beyond decoding from the true entry.
    """
    if md is None:
        md = make_disassembler()
    out: list[int] = []
    pos = 0
    for addr, size, mnemonic, _ in md.disasm_lite(code, 0):
        pos = addr + size
        if mnemonic in _RET_MNEMONICS and code[addr] in (0xC3, 0xC2):
            out.append(base + addr)
    if pos < len(code) and code[pos:].strip(b"\xcc\x90"):
        raise GoBinaryError(f"cannot disassemble function bytes at {base + pos:#x}")
    return out


def call_offsets(code: bytes, vaddr: int, target: int, md: Any = None) -> list[int]:
    """Offsets in `code` (a function's bytes, loaded at `vaddr`) of every direct CALL of the
    function at `target`. Only `call rel32` (E8) counts: Go calls a known function directly,
    so an indirect call (closure, interface method) is never the one asked for."""
    if md is None:
        md = make_disassembler()
    out: list[int] = []
    for addr, size, mnemonic, _ in md.disasm_lite(code, 0):
        if mnemonic == "call" and size == 5 and code[addr] == 0xE8:
            rel = int.from_bytes(code[addr + 1:addr + 5], "little", signed=True)
            if vaddr + addr + size + rel == target:
                out.append(addr)
    return out


_PROLOGUE_INSNS = 6  # Go's stack check is the first 2-4 instructions


def past_stack_check(code: bytes, md: Any = None) -> int:
    """Offset in `code` (a Go function's bytes) just past its stack-bound check, else 0.

    When the goroutine stack must grow, the prologue calls runtime.morestack and then
    re-runs the function from its entry, so an entry uprobe fires twice for one call
    (measured: a second finish() hit ~1 ms later, reading the same arguments). Past the
    `cmp ..., [r14+16]; jbe` the body runs once per call, and the argument registers are
    still untouched there. Computed once per plan (and cached with it).
    """
    if md is None:
        md = make_disassembler()
    saw_check = False
    for n, (addr, size, mnemonic, ops) in enumerate(md.disasm_lite(code[:64], 0)):
        if n >= _PROLOGUE_INSNS:
            break
        if mnemonic == "cmp" and "r14" in ops:
            saw_check = True
        elif saw_check and mnemonic in ("jbe", "jna", "jb", "jc", "jnae"):
            return addr + size
    return 0
