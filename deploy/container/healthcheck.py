"""The image's HEALTHCHECK: GET /healthz of the agent in this container; exit 0 on 200.

The address is the agent's own setting, PYHTTP2PROBE_LISTEN (the image sets
0.0.0.0:9464): change the port with that variable, not with --listen, and this check
follows (unset or empty: the agent's default, 127.0.0.1:9464). A wildcard host is reached
on loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def url(listen: str) -> str:
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    target = url(os.environ.get("PYHTTP2PROBE_LISTEN", "").strip() or "127.0.0.1:9464")
    try:
        with urllib.request.urlopen(target, timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as e:
        print(f"{target}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
