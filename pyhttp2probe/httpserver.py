"""The agent's HTTP endpoints: /metrics, /healthz, /readyz.

- /metrics: prometheus_client's WSGI app for the registry (`?name[]=` filters). Its
  choose_encoder picks the format from the Accept header: OpenMetrics 1.0.0, the only one
  carrying the histograms' exemplars (trace ids), when `application/openmetrics-text` is
  asked with no version or one >= 1.0.0 (Prometheus 2 asks for it first); otherwise the
  classic text format 0.0.4 (no exemplars).
- /healthz: 200 "ok" as long as the process answers (liveness).
- /readyz: 200 "ready" when ready() says so, else 503 with the reason (readiness). What
  "ready" means is the caller's: a node agent is ready once its BPF objects are loaded and
  its discovery runs, with or without a traced process on the node.

The server is prometheus_client's own recipe (start_wsgi_server): wsgiref's WSGIServer with
ThreadingMixIn, a thread per request, the address family picked by getaddrinfo.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

Ready = Callable[[], "bool | tuple[bool, str]"]
_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per request; daemon threads, so a stuck scraper never blocks exit."""

    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN (a DNS query, slow or hung
        # where DNS is broken) only to fill SERVER_NAME; the bound address serves as well.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not log lines."""


class MetricsServer:
    """Serves /metrics of `registry`, /healthz and /readyz on host:port in a thread.

    port 0 binds any free port (`.port` says which). ready() returns a bool, or (bool,
    reason) to say why not; it runs on the request's thread, so it must be cheap and
    thread-safe. The server runs from construction until close() (idempotent); also a
    context manager.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 ready: Ready) -> None:
        self._ready = ready
        self._metrics = make_wsgi_app(registry)
        family, addr = _best_family(host, port)

        class Server(_ThreadingWSGIServer):  # address_family is a class attribute
            address_family = family

        self._httpd = make_server(addr, port, self._app, Server, handler_class=_SilentHandler)
        self.host = addr
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.2,),
                                        name="pyhttp2probe-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _app(self, environ: dict[str, Any],
             start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _reply(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            ready, reason = self._check_ready()
            if ready:
                return _reply(start_response, "200 OK", "ready\n")
            return _reply(start_response, "503 Service Unavailable", f"not ready: {reason}\n")
        return _reply(start_response, "404 Not Found",
                      "not found; try /metrics, /healthz or /readyz\n")

    def _check_ready(self) -> tuple[bool, str]:
        try:
            answer = self._ready()
        except Exception as e:  # a broken check is "not ready", never a 500 or a dead thread
            return False, f"readiness check failed: {e!r}"
        if isinstance(answer, tuple):
            return bool(answer[0]), str(answer[1])
        return bool(answer), "the agent is not ready yet"

    def close(self) -> None:
        """Stop serving and free the port; safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reply(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [*_TEXT, ("Content-Length", str(len(data)))])
    return [data]


def _best_family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The family and address to bind for host (IPv6 literals and names resolving to IPv6
    need AF_INET6; HTTPServer defaults to AF_INET)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])
