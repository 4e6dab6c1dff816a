"""Bad input gets a clear, specific error and leaves no fd or BPF program behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from libbpf_loader import (
    AttachError,
    BpfError,
    BpfObject,
    ClosedError,
    LoadError,
    MapError,
    ObjectOpenError,
    RingBuffer,
)
from tests.test_loader_trace import calltarget, go_func_offsets

BAD_PROGRAM = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";

SEC("uprobe")
int deref_register(struct pt_regs *ctx)
{
	return *(int *)(long)ctx->ax; /* a user value used as a kernel pointer */
}
"""


def open_fds() -> set[str]:
    """This process's fds with what they point at."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own fd
            out.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return out


OUR_PROGRAMS = {"trace_call", "deref_register", "touch", "produce"}


def kernel_programs() -> set[int]:
    """Ids of loaded BPF programs named like the ones these tests load (bpftool)."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                                      capture_output=True, text=True).stdout)
    return {p["id"] for p in progs if p.get("name") in OUR_PROGRAMS}


def assert_no_new_programs(before: set[int]) -> None:
    """The kernel frees a program after an RCU grace period: wait a little for it."""
    deadline = time.monotonic() + 5
    while (new := kernel_programs() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not new, f"BPF programs left loaded: {sorted(new)}"


@pytest.fixture
def leaves_nothing() -> Iterator[None]:
    """Fail the test when it leaves an fd or a BPF program behind."""
    fds, progs = open_fds(), kernel_programs()
    yield
    assert open_fds() == fds
    assert_no_new_programs(progs)


@pytest.fixture
def loaded(bpf_objects: Callable[[str], Path]) -> Iterator[BpfObject]:
    with BpfObject.open(bpf_objects("calltrace")) as obj:
        yield obj.load()


@pytest.mark.usefixtures("leaves_nothing")
class TestBadInput:
    def test_missing_object_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.bpf.o"
        with pytest.raises(ObjectOpenError) as info:
            BpfObject.open(path)
        assert info.value.errno == errno.ENOENT and str(path) in str(info.value)

    def test_corrupt_object_file(self, tmp_path: Path) -> None:
        path = tmp_path / "junk.bpf.o"
        path.write_bytes(os.urandom(4096))
        with pytest.raises(ObjectOpenError) as info:
            BpfObject.open(path)
        assert info.value.errno and str(path) in str(info.value)

    def test_verifier_rejection_carries_the_log(self, compile_bpf: Callable[..., Path]) -> None:
        path = compile_bpf(BAD_PROGRAM, "bad")
        with BpfObject.open(path) as obj, pytest.raises(LoadError) as info:
            obj.load()
        err = info.value
        assert err.errno == errno.EACCES
        assert "invalid mem access" in err.verifier_log
        assert "invalid mem access" in str(err), "the summary shows the log's tail"
        assert str(path) in str(err)
        assert any("deref_register" in line for line in err.libbpf_log)

    def test_missing_binary(self, loaded: BpfObject, tmp_path: Path) -> None:
        binary = tmp_path / "absent"
        with pytest.raises(AttachError) as info:
            loaded.program("trace_call").attach_uprobe(binary, 0x1000)
        assert info.value.errno == errno.ENOENT
        assert str(binary) in str(info.value) and "trace_call" in str(info.value)

    def test_binary_not_elf(self, loaded: BpfObject, tmp_path: Path) -> None:
        binary = tmp_path / "script.sh"
        binary.write_text("#!/bin/sh\necho hi\n" * 10)
        with pytest.raises(AttachError) as info:
            loaded.program("trace_call").attach_uprobe(binary, 0x10)
        assert info.value.errno == errno.ENOEXEC

    def test_offset_in_data_segment(self, loaded: BpfObject) -> None:
        binary = calltarget()
        with open(binary, "rb") as f:
            data = next(s for s in ELFFile(f).iter_segments()
                        if s["p_type"] == "PT_LOAD" and not s["p_flags"] & 1)
        offset = data["p_offset"] + 16
        with pytest.raises(AttachError) as info:
            loaded.program("trace_call").attach_uprobe(binary, offset)
        assert info.value.errno == errno.EINVAL
        assert f"0x{offset:x}" in str(info.value) and str(binary) in str(info.value)

    def test_offset_past_eof(self, loaded: BpfObject) -> None:
        binary = calltarget()
        offset = binary.stat().st_size + 4096
        with pytest.raises(AttachError) as info:
            loaded.program("trace_call").attach_uprobe(binary, offset)
        assert info.value.errno == errno.EINVAL and f"0x{offset:x}" in str(info.value)

    def test_pid_that_does_not_exist(self, loaded: BpfObject) -> None:
        binary = calltarget()
        entry, _ = go_func_offsets(binary, "main.target")
        pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
        with pytest.raises(AttachError) as info:
            loaded.program("trace_call").attach_uprobe(binary, entry, pid=pid)
        assert info.value.errno == errno.ESRCH and f"pid {pid}" in str(info.value)

    def test_uprobe_multi_needs_prepare_and_valid_offsets(
            self, bpf_objects: Callable[[str], Path]) -> None:
        binary = calltarget()
        entry, rets = go_func_offsets(binary, "main.target")
        with BpfObject.open(bpf_objects("calltrace")) as obj:
            prog = obj.program("trace_call")
            obj.load()
            with pytest.raises(AttachError, match="prepare_uprobe_multi"):
                prog.attach_uprobe_multi(binary, [entry])
            with pytest.raises(AttachError) as info:
                prog.prepare_uprobe_multi()
            assert info.value.errno == errno.EBUSY
        with BpfObject.open(bpf_objects("calltrace")) as obj:
            prog = obj.program("trace_call")
            prog.prepare_uprobe_multi()
            obj.load()
            bad = binary.stat().st_size + 1
            with pytest.raises(AttachError, match=f"offset 0x{bad:x} is outside"):
                prog.attach_uprobe_multi(binary, [entry, bad])
            with pytest.raises(AttachError, match="one cookie per offset"):
                prog.attach_uprobe_multi(binary, [entry, *rets], cookies=[1])
            with pytest.raises(AttachError) as info:
                prog.attach_uprobe(binary, entry)  # a multi program has one attach style
            assert "trace_call" in str(info.value)

    def test_attach_before_load(self, bpf_objects: Callable[[str], Path]) -> None:
        binary = calltarget()
        entry, _ = go_func_offsets(binary, "main.target")
        with BpfObject.open(bpf_objects("calltrace")) as obj, pytest.raises(AttachError):
            obj.program("trace_call").attach_uprobe(binary, entry)

    def test_unknown_program_and_map(self, loaded: BpfObject) -> None:
        with pytest.raises(BpfError, match="trace_call"):
            loaded.program("nope")
        with pytest.raises(BpfError, match="events"):
            loaded.map("nope")

    def test_every_method_after_close(self, bpf_objects: Callable[[str], Path]) -> None:
        binary = calltarget()
        entry, _ = go_func_offsets(binary, "main.target")
        obj = BpfObject.open(bpf_objects("calltrace")).load()
        prog, events, bss = obj.program("trace_call"), obj.map("events"), obj.map(".bss")
        link = prog.attach_uprobe(binary, entry)
        rb = RingBuffer(events, lambda batch: None)
        obj.close()
        obj.close()  # idempotent
        assert link.closed and rb.closed
        link.close()
        rb.close()
        calls: list[Callable[[], object]] = [
            obj.load, lambda: obj.program("trace_call"), lambda: obj.map("events"),
            obj.program_names, obj.map_names,
            lambda: prog.fd, lambda: prog.attach_uprobe(binary, entry), prog.run_count,
            lambda: prog.attach_uprobe_multi(binary, [entry]), prog.prepare_uprobe_multi,
            lambda: prog.test_run(b"\0" * 64),
            lambda: events.fd, lambda: bss.lookup(0), lambda: bss.update(0, b"\0" * 8),
            lambda: bss.delete(0), lambda: list(bss.keys()), lambda: bss.initial_value,
            lambda: bss.set_initial_value(b"\0" * 8), lambda: events.resize(1 << 16),
            lambda: rb.poll(0), rb.consume, rb.fileno, lambda: RingBuffer(events, print),
        ]
        for call in calls:
            with pytest.raises(ClosedError) as info:
                call()
            assert info.value.errno == errno.EBADF and "closed" in str(info.value)

    def test_map_size_mismatch(self, loaded: BpfObject) -> None:
        bss = loaded.map(".bss")
        with pytest.raises(MapError, match="must be 4 bytes"):
            bss.lookup(b"\0\0")
        with pytest.raises(MapError, match=f"must be {bss.value_size} bytes"):
            bss.update(0, b"\0")

    def test_ring_buffer_on_wrong_map(self, loaded: BpfObject) -> None:
        with pytest.raises(MapError, match="not a ring buffer"):
            RingBuffer(loaded.map(".bss"), print)
