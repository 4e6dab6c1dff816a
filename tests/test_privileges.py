"""`run` refuses to start without what the kernel will demand, naming each missing item.

For real: the agent runs under `setpriv` with capabilities dropped, as root (uid 0 is not
enough: CapEff decides) and as nobody; the check is also read against fake /proc files for
what this host cannot be switched to (paranoid level, BTF) without touching it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from pyhttp2probe.privileges import (
    CAP_BPF,
    CAP_PERFMON,
    CAP_SYS_ADMIN,
    CAP_SYS_PTRACE,
    effective_caps,
    missing_privileges,
)
from pyhttp2probe.probes import all_paths

ROOT = Path(__file__).resolve().parent.parent
CAP_DAC_READ_SEARCH = 2  # not accepted in place of CAP_SYS_PTRACE
NOBODY = "65534"

# These tests drop privileges from root with setpriv (util-linux): without either they
# fail, they are not skipped (nothing here is).
assert os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv (util-linux)"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYHTTP2PROBE_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def _setpriv(drop: str, argv: list[str], nobody: bool = False
             ) -> subprocess.CompletedProcess[str]:
    """Run `python3 ARGV…` with the capabilities in `drop` ('-bpf,-perfmon' or '-all')
    removed from the inheritable and bounding sets (so an exec cannot regain them), as
    root or as nobody."""
    cmd = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]
    if nobody:
        cmd += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    cmd += [sys.executable, *argv]
    with tempfile.TemporaryDirectory(prefix="pyhttp2probe-priv-") as hold:
        if nobody:
            cmd = _reachable_for_nobody(cmd, hold)
        return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=120)


def _reachable_for_nobody(cmd: list[str], hold: str) -> list[str]:
    """Wrap cmd so that nobody can run this interpreter and read this checkout.

    The interpreter may live under a directory nobody cannot enter (pyenv in /root, mode
    0700). Rather than loosening the host, the command runs in a private mount namespace
    where that directory is a 0755 tmpfs holding a bind mount of the one child on the way
    to the interpreter: the same paths, nothing else of it visible. `hold` is an empty
    directory, a mount point inside the namespace only."""
    for path in (ROOT, Path(sys.prefix)):
        blocked = [p for p in [*reversed(path.parents), path]
                   if not p.stat().st_mode & stat.S_IXOTH]
        if not blocked:
            continue
        assert path != ROOT, f"{ROOT} is not readable by others: run from a copy that is"
        assert len(blocked) == 1, f"more than one private directory on the way to {path}"
        shut = blocked[0]
        child = shut / path.relative_to(shut).parts[0]
        script = (f'mount --bind "{child}" "{hold}" && '
                  f'mount -t tmpfs -o mode=0755,size=1m tmpfs "{shut}" && '
                  f'mkdir "{child}" && mount --bind "{hold}" "{child}" && exec "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                "sh", *cmd]
    return cmd


def _refusal(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "pyhttp2probe: error: missing privileges: "), p.stderr
    assert p.stdout == ""
    return lines[0]


def _missing_under(drop: str, link_style: str, nobody: bool = False) -> list[str]:
    code = ("import json; from pyhttp2probe.privileges import missing_privileges; "
            f"print(json.dumps(missing_privileges({link_style!r})))")
    p = _setpriv(drop, ["-c", code], nobody=nobody)
    assert p.returncode == 0, p.stderr
    import json

    return list(json.loads(p.stdout))


def test_root_without_bpf_perfmon_or_sys_admin_is_refused_naming_them() -> None:
    """uid 0 with those capabilities dropped: refused, because CapEff decides, not uid."""
    line = _refusal(_setpriv("-bpf,-perfmon,-sys_admin", ["-m", "pyhttp2probe", "run",
                                                          "--pid", "1"]))
    assert "CAP_BPF (load BPF programs" in line and "CAP_PERFMON (attach uprobes" in line
    assert "CAP_SYS_PTRACE" not in line and "BTF" not in line
    assert "perf_event_paranoid" not in line  # 2 here: fine once CAP_PERFMON is there


def test_nobody_without_capabilities_is_refused_naming_them() -> None:
    who = _setpriv("-all", ["-c", "import os; print(os.geteuid(), open('/proc/self/status')"
                                  ".read().split('CapEff:')[1].split()[0])"], nobody=True)
    assert who.stdout.split() == [NOBODY, "0000000000000000"], who.stderr
    line = _refusal(_setpriv("-all", ["-m", "pyhttp2probe", "run", "--pid", "1"],
                             nobody=True))
    for name in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"):
        assert name in line, line
    assert "CAP_SYS_ADMIN" not in line  # not asked for with uprobe_multi links (auto here)


def test_nobody_asking_for_perf_event_links_is_told_cap_sys_admin() -> None:
    line = _refusal(_setpriv("-all", ["-m", "pyhttp2probe", "run", "--pid", "1",
                                      "--link-style", "perf_event"], nobody=True))
    assert "CAP_SYS_ADMIN (perf-event uprobes" in line


def test_perf_event_links_need_sys_admin_even_as_root() -> None:
    line = _refusal(_setpriv("-sys_admin", ["-m", "pyhttp2probe", "run", "--pid", "1",
                                            "--link-style", "perf_event"]))
    assert line.endswith("missing privileges: CAP_SYS_ADMIN (perf-event uprobes, link "
                         "style perf_event, need it on this kernel)")


def test_config_errors_come_before_privileges() -> None:
    p = _setpriv("-all", ["-m", "pyhttp2probe", "run", "--pid", "1", "--ring-size", "3"],
                 nobody=True)
    assert p.returncode == 2 and p.stderr.startswith("pyhttp2probe: error: --ring-size: ")


def test_sys_admin_stands_for_bpf_and_perfmon() -> None:
    """Root without CAP_BPF and CAP_PERFMON but with CAP_SYS_ADMIN passes: the kernel's
    bpf_capable() and perfmon_capable() accept CAP_SYS_ADMIN (and before 5.8 it was the
    only way)."""
    assert _missing_under("-bpf,-perfmon", "auto") == []


def test_bpf_and_perfmon_are_enough_for_uprobe_multi_links() -> None:
    """Without CAP_SYS_ADMIN the check passes for uprobe_multi, and the Agent really loads
    every probe path with those capabilities (the check asks for nothing it does not need)."""
    assert _missing_under("-sys_admin", "uprobe_multi") == []
    code = ("import sys; from pyhttp2probe import Agent; a = Agent(registry=None, "
            "link_style='uprobe_multi'); print('loaded paths:', len(a.paths), file=sys.stderr);"
            " a.close()")
    p = _setpriv("-sys_admin", ["-c", code])
    assert p.returncode == 0 and f"loaded paths: {len(all_paths())}" in p.stderr, p.stderr


def test_root_with_every_capability_passes() -> None:
    caps = effective_caps()
    for cap in (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE):
        assert caps >> cap & 1, cap
    for style in ("auto", "uprobe_multi", "perf_event"):
        assert missing_privileges(style) == []


def test_effective_caps_read_from_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000200000\n")
    assert effective_caps(status) == (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_ADMIN)
    assert effective_caps(tmp_path / "absent") == 0


def _bits(*caps: int) -> int:
    return sum(1 << c for c in caps)


def test_paranoid_level_above_2_without_perfmon(tmp_path: Path) -> None:
    paranoid = tmp_path / "perf_event_paranoid"
    paranoid.write_text("3\n")
    got = missing_privileges("uprobe_multi", caps=_bits(CAP_BPF, CAP_SYS_PTRACE),
                             paranoid=paranoid)
    assert got[-1].startswith("kernel.perf_event_paranoid <= 2 (it is 3;")
    assert missing_privileges("uprobe_multi", paranoid=paranoid,
                              caps=_bits(CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE)) == []
    paranoid.write_text("2\n")
    got = missing_privileges("uprobe_multi", caps=_bits(CAP_BPF, CAP_SYS_PTRACE),
                             paranoid=paranoid)
    assert got == ["CAP_PERFMON (attach uprobes, read traced memory from BPF)"]


def test_unreadable_btf_is_named(tmp_path: Path) -> None:
    got = missing_privileges("uprobe_multi", caps=_bits(CAP_SYS_ADMIN, CAP_SYS_PTRACE),
                             btf=tmp_path / "vmlinux")
    assert got == [f"read access to {tmp_path / 'vmlinux'} (kernel BTF, for CO-RE "
                   "relocations: No such file or directory)"]


def test_dac_read_search_does_not_stand_for_ptrace() -> None:
    """/proc/PID/exe of another user's process passes the kernel's ptrace check only."""
    got = missing_privileges("uprobe_multi", caps=_bits(CAP_BPF, CAP_PERFMON,
                                                        CAP_DAC_READ_SEARCH))
    assert got == ["CAP_SYS_PTRACE (read /proc/PID/exe, maps and environ of other users' "
                   "processes)"]
