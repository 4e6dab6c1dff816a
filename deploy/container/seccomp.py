"""Write seccomp.json: the container engine's default seccomp profile, except that `bpf`
is allowed under CAP_BPF and `perf_event_open` under CAP_PERFMON, not only under
CAP_SYS_ADMIN as the default has it (Linux split those capabilities out in 5.8).

The capabilities still decide in the kernel; this profile only stops seccomp from
refusing the two calls first. Everything else is the default, unchanged.

Usage: python3 seccomp.py [DEFAULT_PROFILE] > seccomp.json
DEFAULT_PROFILE: /usr/share/containers/seccomp.json (Debian's containers-common 0.50,
what seccomp.json was made from) unless given.
"""

from __future__ import annotations

import json
import sys
from typing import Any

OPENED = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}


def widen(profile: dict[str, Any]) -> dict[str, Any]:
    found = set()
    for rule in profile["syscalls"]:
        # The default's "EPERM unless CAP_SYS_ADMIN" rule: it keeps its other calls; its
        # "allowed under CAP_SYS_ADMIN" twin stays as it is.
        if rule.get("excludes", {}).get("caps") == ["CAP_SYS_ADMIN"]:
            found |= set(rule["names"]) & OPENED.keys()
            rule["names"] = [n for n in rule["names"] if n not in OPENED]
    if found != OPENED.keys():
        raise SystemExit(f"no CAP_SYS_ADMIN-only rule for {sorted(OPENED.keys() - found)} "
                         "in this profile: check it by hand")
    for name, cap in OPENED.items():
        profile["syscalls"] += [
            {"names": [name], "action": "SCMP_ACT_ALLOW", "args": [],
             "comment": f"pyhttp2probe: {name} under {cap} (CAP_SYS_ADMIN has its own rule)",
             "includes": {"caps": [cap]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": [name], "action": "SCMP_ACT_ERRNO", "args": [],
             "comment": f"pyhttp2probe: {name} refused with EPERM without {cap} or "
                        "CAP_SYS_ADMIN, as the default does",
             "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN", cap]},
             "errnoRet": 1, "errno": "EPERM"}]
    profile["syscalls"] = [r for r in profile["syscalls"] if r["names"]]
    return profile


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
    with open(src) as f:
        json.dump(widen(json.load(f)), sys.stdout, indent=1)
    sys.stdout.write("\n")
