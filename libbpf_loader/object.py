"""BpfObject and Program: open → configure → load → attach, with one cleanup path."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from libbpf_loader._libbpf import ffi, lib
from libbpf_loader._log import capture_libbpf_log
from libbpf_loader.errors import (
    AttachError,
    BpfError,
    ClosedError,
    LoadError,
    ObjectOpenError,
    error_from_errno,
    normalize_errno,
    strerror,
)
from libbpf_loader.links import Link
from libbpf_loader.maps import Map

if TYPE_CHECKING:
    from libbpf_loader.ringbuf import RingBuffer

VERIFIER_LOG_SIZE = 1 << 20  # libbpf retries a failed load with the log into this buffer
PT_LOAD = 1
PF_X = 1


def _libbpf_tail(lines: list[str], n: int = 3) -> str:
    kept = [line.removeprefix("libbpf: ") for line in lines
            if line.strip() and "PROG LOAD LOG" not in line]
    return ("; libbpf: " + " | ".join(kept[-n:])) if kept else ""


def executable_ranges(binary: str) -> list[tuple[int, int]]:
    """File ranges [start, end) of the executable PT_LOAD segments of a 64-bit ELF.

    Raises AttachError when the file is missing or is not a 64-bit little-endian ELF.
    """
    try:
        with open(binary, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                raise AttachError(errno.ENOEXEC, f"binary {binary!r} is not an ELF file")
            if head[4] != 2 or head[5] != 1:
                raise AttachError(errno.ENOEXEC,
                                  f"binary {binary!r} is not a 64-bit little-endian ELF")
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError as exc:
        if isinstance(exc, BpfError):
            raise
        raise AttachError(exc.errno or errno.EIO,
                          f"binary {binary!r}: {exc.strerror or exc}") from exc
    ranges = []
    for i in range(phnum):
        if (i + 1) * phentsize > len(table):
            break
        p_type, p_flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", table, i * phentsize)
        if p_type == PT_LOAD and p_flags & PF_X:
            ranges.append((p_offset, p_offset + p_filesz))
    return ranges


class Program:
    """One BPF program of a BpfObject; valid while the object is open."""

    def __init__(self, ptr: Any, obj: BpfObject) -> None:
        self._ptr = ptr
        self._obj = obj
        self.name = ffi.string(lib.bpf_program__name(ptr)).decode()
        # ELF section, e.g. "uprobe" or "syscall" (a program run by run_syscall)
        self.section = ffi.string(lib.bpf_program__section_name(ptr)).decode()

    def _live(self) -> Any:
        self._obj._check_open()
        return self._ptr

    @property
    def fd(self) -> int:
        """File descriptor (-1 before load)."""
        return lib.bpf_program__fd(self._live())

    def _check_uprobe_target(self, binary: str, offsets: list[int], pid: int,
                             what: str) -> None:
        """Validate before acquiring: loaded, ELF binary, executable offsets, live pid."""
        if self.fd < 0:
            raise AttachError(errno.EBADF, f"{what}: object {self._obj.path} is not loaded")
        try:
            ranges = executable_ranges(binary)
        except AttachError as exc:
            raise AttachError(exc.errno, f"{what}: {exc.strerror}") from exc
        for off in offsets:
            if not any(lo <= off < hi for lo, hi in ranges):
                spans = ", ".join(f"0x{lo:x}-0x{hi:x}" for lo, hi in ranges) or "none"
                raise AttachError(errno.EINVAL, f"{what}: offset 0x{off:x} is outside the "
                                                f"executable segments (file ranges {spans})")
        if pid != -1 and (pid <= 0 or not os.path.exists(f"/proc/{pid}")):
            raise AttachError(errno.ESRCH, f"{what}: no such process")

    def attach_uprobe(self, binary_path: str | os.PathLike[str], file_offset: int,
                      pid: int = -1, cookie: int = 0) -> Link:
        """Attach as a uprobe at `file_offset` of `binary_path` (pid -1: every process).

        `cookie` is returned by bpf_get_attach_cookie() in the program, so one program can
        tell its attach points apart. Entry probes only: return points are uprobes at RET
        offsets (no uretprobes, see DESIGN.md). The Link must be closed (or the object).
        Each such link costs ~0.1 s of RCU waits to detach here: prefer
        attach_uprobe_multi for many offsets.
        """
        prog = self._live()
        binary = os.fspath(binary_path)
        what = (f"attach program {self.name!r} as uprobe at {binary!r} offset 0x{file_offset:x}"
                f" pid {pid}")
        self._check_uprobe_target(binary, [file_offset], pid, what)
        with capture_libbpf_log() as lines:
            ptr = lib.lbl_attach_uprobe(prog, pid, binary.encode(), file_offset, cookie)
            err = ffi.errno
        if ptr == ffi.NULL:
            raise error_from_errno(AttachError, err, what, _libbpf_tail(lines))
        link = Link(ptr, self._obj, f"{self.name}@{binary}+0x{file_offset:x}")
        self._obj._links.append(link)
        return link

    def attach(self) -> Link:
        """Attach where the program's SEC() name says (libbpf's auto-attach), e.g.
        `tp_btf/sched_process_exec`, `fentry/...`, `raw_tp/...`.

        For section names that carry their whole target; uprobes need attach_uprobe. The
        Link must be closed (or the object).
        """
        prog = self._live()
        what = f"attach program {self.name!r} of {self._obj.path!r} by its section name"
        if self.fd < 0:
            raise AttachError(errno.EBADF, f"{what}: object is not loaded")
        with capture_libbpf_log() as lines:
            ptr = lib.bpf_program__attach(prog)
            err = ffi.errno
        if ptr == ffi.NULL:
            hint = (" (the section name names no target: use attach_uprobe or a full "
                    "section such as tp_btf/<tracepoint>)"
                    if normalize_errno(err) == errno.EOPNOTSUPP else "")
            raise error_from_errno(AttachError, err, what, _libbpf_tail(lines) + hint)
        link = Link(ptr, self._obj, self.name)
        self._obj._links.append(link)
        return link

    def prepare_uprobe_multi(self) -> None:
        """Mark the program (before load) for attach_uprobe_multi.

        The kernel then refuses attach_uprobe for it: one program, one attach style.
        """
        prog = self._live()
        if self._obj.loaded:
            raise AttachError(errno.EBUSY, f"program {self.name!r}: prepare_uprobe_multi "
                                           "must be called before load")
        ret = lib.lbl_prepare_uprobe_multi(prog)
        if ret < 0:
            raise error_from_errno(AttachError, ret, f"program {self.name!r}: uprobe_multi")

    def attach_uprobe_multi(self, binary_path: str | os.PathLike[str],
                            file_offsets: Sequence[int], cookies: Sequence[int] | None = None,
                            pid: int = -1) -> Link:
        """Attach at many offsets of one binary with ONE kernel link (kernel >= 6.6).

        `cookies[i]` tags `file_offsets[i]`. Attach and detach cost one RCU wait for all
        offsets, not one per offset. Needs prepare_uprobe_multi() before load.
        """
        self._live()
        binary = os.fspath(binary_path)
        offs = [int(o) for o in file_offsets]
        tags = [int(c) for c in cookies] if cookies is not None else [0] * len(offs)
        shown = ",".join(f"0x{o:x}" for o in offs[:8]) + (",…" if len(offs) > 8 else "")
        what = (f"attach program {self.name!r} as uprobe_multi at {binary!r} offsets "
                f"[{shown}] pid {pid}")
        if not offs or len(tags) != len(offs):
            raise AttachError(errno.EINVAL, f"{what}: need one cookie per offset, >= 1 offset")
        self._check_uprobe_target(binary, offs, pid, what)
        fd = lib.lbl_attach_uprobe_multi(self.fd, binary.encode(),
                                         ffi.new("uint64_t[]", offs),
                                         ffi.new("uint64_t[]", tags), len(offs),
                                         0 if pid == -1 else pid)
        if fd < 0:
            hint = (" (was prepare_uprobe_multi() called before load?)"
                    if fd == -errno.EINVAL else "")
            raise error_from_errno(AttachError, fd, what, hint)
        link = Link(None, self._obj, f"{self.name}@{binary}+[{shown}]", fd=fd)
        self._obj._links.append(link)
        return link

    def run_count(self) -> tuple[int, int]:
        """(run_cnt, run_time_ns) from the kernel; counts only while BPF stats are enabled."""
        fd = self.fd
        cnt = ffi.new("uint64_t *")
        ns = ffi.new("uint64_t *")
        ret = lib.lbl_prog_stats(fd, cnt, ns)
        if ret < 0:
            raise error_from_errno(BpfError, ret, f"stats of program {self.name!r}")
        return cnt[0], ns[0]

    def test_run(self, data: bytes, repeat: int = 1) -> tuple[int, int]:
        """Run via BPF_PROG_TEST_RUN `repeat` times; returns (retval, mean duration ns)."""
        retval = ffi.new("uint32_t *")
        duration = ffi.new("uint32_t *")
        ret = lib.lbl_prog_test_run(self.fd, repeat, data, len(data), retval, duration)
        if ret < 0:
            raise error_from_errno(BpfError, ret, f"test run of program {self.name!r}")
        return retval[0], duration[0]

    def run_syscall(self, ctx: bytes) -> int:
        """Run a SEC("syscall") program once with `ctx` as its context; returns its
        return value."""
        retval = ffi.new("uint32_t *")
        ret = lib.lbl_prog_run_syscall(self.fd, ctx, len(ctx), retval)
        if ret < 0:
            raise error_from_errno(BpfError, ret, f"run of syscall program {self.name!r}")
        return retval[0]

    def run_on_cpu(self, cpu: int, ctx: bytes = bytes(8)) -> int:
        """Run a raw_tp program once on CPU `cpu` (BPF_F_TEST_RUN_ON_CPU: the kernel runs it
        there by IPI, so it sees that CPU's per-CPU map values); returns its return value."""
        retval = ffi.new("uint32_t *")
        ret = lib.lbl_prog_run_on_cpu(self.fd, cpu, ctx, len(ctx), retval)
        if ret < 0:
            raise error_from_errno(BpfError, ret, f"run of program {self.name!r} on CPU {cpu}")
        return retval[0]

    def __repr__(self) -> str:
        return f"<Program {self.name!r}>"


class BpfObject:
    """A BPF object file: open it, configure maps, load, then attach and read.

    `close()` frees ring buffers, then links, then the object; it is idempotent, and any
    use afterwards raises ClosedError. Use it as a context manager.
    """

    def __init__(self, ptr: Any, path: str, log_buf: Any) -> None:
        self._ptr = ptr
        self.path = path
        self._log_buf = log_buf  # libbpf keeps a pointer to it until load
        self._loaded = False
        self._programs: dict[str, Program] = {}
        self._maps: dict[str, Map] = {}
        self._links: list[Link] = []
        self._ringbufs: list[RingBuffer] = []

    @classmethod
    def open(cls, path: str | os.PathLike[str],
             btf_custom_path: str | os.PathLike[str] | None = None) -> BpfObject:
        """Open and parse `path` (nothing is loaded into the kernel yet)."""
        spath = os.fspath(path)
        if not Path(spath).is_file():
            raise ObjectOpenError(errno.ENOENT, f"open BPF object {spath!r}: no such file")
        btf = os.fspath(btf_custom_path).encode() if btf_custom_path is not None else ffi.NULL
        log_buf = ffi.new("char[]", VERIFIER_LOG_SIZE)
        with capture_libbpf_log() as lines:
            ptr = lib.lbl_open(spath.encode(), btf, log_buf, VERIFIER_LOG_SIZE)
            err = ffi.errno
        if ptr == ffi.NULL:
            raise error_from_errno(ObjectOpenError, err, f"open BPF object {spath!r}",
                                   _libbpf_tail(lines))
        return cls(ptr, spath, log_buf)

    def _check_open(self) -> None:
        if self._ptr is None:
            raise ClosedError(f"BPF object {self.path!r}")

    @property
    def closed(self) -> bool:
        return self._ptr is None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> BpfObject:
        """Load every program and map; on failure raise LoadError with the verifier log."""
        self._check_open()
        if self._loaded:
            raise LoadError(errno.EALREADY, f"BPF object {self.path!r} is already loaded")
        self._log_buf[0] = b"\0"
        with capture_libbpf_log() as lines:
            ret = lib.bpf_object__load(self._ptr)
        if ret < 0:
            log = ffi.string(self._log_buf).decode("utf-8", "replace")
            raise LoadError(normalize_errno(ret), f"load BPF object {self.path!r}: "
                            f"{strerror(ret)}{_libbpf_tail(lines)}", verifier_log=log,
                            libbpf_log=tuple(lines))
        self._loaded = True
        return self

    def program(self, name: str) -> Program:
        """The program called `name` (its C function name)."""
        self._check_open()
        if name not in self._programs:
            ptr = lib.bpf_object__find_program_by_name(self._ptr, name.encode())
            if ptr == ffi.NULL:
                raise BpfError(errno.ENOENT, f"no program {name!r} in {self.path!r} "
                                             f"(has: {', '.join(self.program_names())})")
            self._programs[name] = Program(ptr, self)
        return self._programs[name]

    def map(self, name: str) -> Map:
        """The map called `name` (also ".rodata", ".data", ".bss")."""
        self._check_open()
        if name not in self._maps:
            ptr = lib.bpf_object__find_map_by_name(self._ptr, name.encode())
            if ptr == ffi.NULL:
                raise BpfError(errno.ENOENT, f"no map {name!r} in {self.path!r} "
                                             f"(has: {', '.join(self.map_names())})")
            self._maps[name] = Map(ptr, self)
        return self._maps[name]

    def program_names(self) -> list[str]:
        self._check_open()
        names, ptr = [], lib.bpf_object__next_program(self._ptr, ffi.NULL)
        while ptr != ffi.NULL:
            names.append(ffi.string(lib.bpf_program__name(ptr)).decode())
            ptr = lib.bpf_object__next_program(self._ptr, ptr)
        return names

    def map_names(self) -> list[str]:
        self._check_open()
        names, ptr = [], lib.bpf_object__next_map(self._ptr, ffi.NULL)
        while ptr != ffi.NULL:
            names.append(ffi.string(lib.bpf_map__name(ptr)).decode())
            ptr = lib.bpf_object__next_map(self._ptr, ptr)
        return names

    def _forget_link(self, link: Link) -> None:
        # Links may be closed from several threads at once (their detach mostly waits in
        # the kernel): a concurrent removal of the same link is not an error.
        with contextlib.suppress(ValueError):
            self._links.remove(link)

    def _register_ringbuf(self, rb: RingBuffer) -> None:
        self._ringbufs.append(rb)

    def _forget_ringbuf(self, rb: RingBuffer) -> None:
        if rb in self._ringbufs:
            self._ringbufs.remove(rb)

    def close(self) -> None:
        """Free ring buffers, then links, then the object. Idempotent."""
        if self._ptr is None:
            return
        for rb in list(self._ringbufs):
            rb.close()
        for link in list(self._links):
            link.close()
        ptr, self._ptr = self._ptr, None
        self._programs.clear()
        self._maps.clear()
        lib.bpf_object__close(ptr)
        self._log_buf = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self._loaded else "open")
        return f"<BpfObject {self.path!r} {state}>"


@contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """Enable kernel BPF run-time stats (BPF_ENABLE_STATS) for the block's duration."""
    fd = lib.lbl_enable_stats()
    if fd < 0:
        raise error_from_errno(BpfError, fd, "enable BPF stats")
    try:
        yield
    finally:
        os.close(fd)
