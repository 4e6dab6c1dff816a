"""What the agent needs from the kernel before it loads anything, and what is missing.

Checked from the effective capability set (CapEff in /proc/self/status), never from the
uid alone: root in a container or under `setpriv`/`capsh` may hold none of them, and a
non-root agent may hold all it needs.
- CAP_BPF: load BPF programs and create maps. CAP_PERFMON: attach uprobes and read traced
  memory from BPF. CAP_SYS_ADMIN implies both (the only way on kernels before 5.8).
- CAP_SYS_PTRACE: open /proc/PID/exe (and maps, environ) of other users' processes: the
  kernel's ptrace access check guards them; CAP_DAC_READ_SEARCH does not pass it (measured
  in a container: ready, but no host process was ever traced).
- CAP_SYS_ADMIN for perf-event uprobes (link style perf_event, and auto on kernels without
  uprobe_multi): this 6.18 kernel refuses them to CAP_PERFMON alone.
- /sys/kernel/btf/vmlinux readable: CO-RE relocations need the kernel's BTF.
- kernel.perf_event_paranoid <= 2 unless CAP_PERFMON (or CAP_SYS_ADMIN) overrides it.
"""

from __future__ import annotations

from pathlib import Path

CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

BTF = Path("/sys/kernel/btf/vmlinux")
PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")
STATUS = Path("/proc/self/status")


def effective_caps(status: Path = STATUS) -> int:
    """The CapEff bit mask of this process (0 when it cannot be read)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def missing_privileges(link_style: str, *, caps: int | None = None, btf: Path = BTF,
                       paranoid: Path = PARANOID) -> list[str]:
    """One line per missing privilege, naming it and why it is needed; [] when all is there.

    link_style: "auto", "uprobe_multi" or "perf_event" (auto is what the Agent would pick
    on this kernel). caps, btf, paranoid: what to check instead of this process and host.
    """
    eff = effective_caps() if caps is None else caps

    def has(cap: int) -> bool:
        return bool(eff >> cap & 1)

    admin = has(CAP_SYS_ADMIN)
    perfmon = has(CAP_PERFMON) or admin
    missing = []
    if not (has(CAP_BPF) or admin):
        missing.append("CAP_BPF (load BPF programs and create their maps)")
    if not perfmon:
        missing.append("CAP_PERFMON (attach uprobes, read traced memory from BPF)")
    if not has(CAP_SYS_PTRACE):
        missing.append("CAP_SYS_PTRACE (read /proc/PID/exe, maps and environ of other users' "
                       "processes)")
    if link_style == "auto":
        from .uprobes import default_style
        link_style = default_style()
    if link_style == "perf_event" and not admin:
        missing.append("CAP_SYS_ADMIN (perf-event uprobes, link style perf_event, need it "
                       "on this kernel)")
    try:
        with btf.open("rb") as f:
            f.read(1)
    except OSError as e:
        missing.append(f"read access to {btf} (kernel BTF, for CO-RE relocations: "
                       f"{e.strerror})")
    if not perfmon:
        try:
            level = int(paranoid.read_text().strip())
        except (OSError, ValueError):
            level = None
        if level is None:
            missing.append(f"perf events ({paranoid} unreadable: kernel without "
                           "CONFIG_PERF_EVENTS?)")
        elif level > 2:
            missing.append(f"kernel.perf_event_paranoid <= 2 (it is {level}; without "
                           "CAP_PERFMON or CAP_SYS_ADMIN perf events are refused)")
    return missing
