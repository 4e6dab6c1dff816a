"""The settings of `pyhttp2probe run`, from flags, environment and a YAML file.

Precedence, per option: command-line flag > `PYHTTP2PROBE_<OPTION>` variable > the YAML file
named by `--config FILE` (or `PYHTTP2PROBE_CONFIG`) > the default in `Settings`. Only what a
source really gives counts: an option absent from the flags leaves the environment's value,
and so on. Every source is validated on its own, so a bad value is reported even where a
stronger source overrides it; an unknown YAML key or `PYHTTP2PROBE_*` variable is an error
too. Errors are one `ConfigError` whose message names the source and the key.

    settings = parse_run_args(["--exe", "*-server", "--listen", ":9464"], os.environ)
    settings.exe, settings.listen_host, settings.listen_port, settings.ring_size
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    model_validator,
)

ENV_PREFIX = "PYHTTP2PROBE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
DEFAULT_LISTEN = "127.0.0.1:9464"
MIB = 1 << 20
RING_MIN = 4096  # one page: the kernel wants a page-aligned power of two
RING_MAX = 1 << 31  # the ring map's max_entries is 32-bit
SELECTION = ("pid", "exe", "port", "all")
LIST_OPTIONS = ("pid", "exe", "port", "exclude_exe")


class ConfigError(ValueError):
    """A bad option; the message names its source and key (`--series-ttl: must be > 0`)."""


# -- value parsers: each takes what a flag, a variable or YAML gives, says what is wrong --

def _reject_bool(value: Any, what: str) -> None:
    if isinstance(value, bool):  # bool is an int: `pid: [true]` must not become pid 1
        raise ValueError(f"{value!r} is not {what}")


def _items(value: Any) -> list[Any]:
    """A list option's items: a YAML list, one YAML scalar, or the flag's repeated values."""
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _int(value: Any, what: str) -> int:
    _reject_bool(value, what)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    raise ValueError(f"{value!r} is not {what}")


def _int_list(what: str, low: int, high: int) -> Any:
    def parse(value: Any) -> tuple[int, ...]:
        out: list[int] = []
        for item in _items(value):
            # `--pid 1,2`, PYHTTP2PROBE_PID=1,2 and `pid: [1, 2]` all mean two pids
            parts = item.split(",") if isinstance(item, str) else [item]
            for part in parts:
                n = _int(part, what)
                if not low <= n <= high:
                    raise ValueError(f"{n} is not {what} ({low}..{high})")
                out.append(n)
        return tuple(dict.fromkeys(out))
    return BeforeValidator(parse)


def _patterns(value: Any) -> tuple[str, ...]:
    out = []
    for item in _items(value):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{item!r} is not a file name pattern")
        out.append(item.strip())
    return tuple(dict.fromkeys(out))


def parse_bool(value: Any) -> bool:
    """true/false/1/0/yes/no (any case), or a YAML boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false/1/0/yes/no)")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds: a number, or Go-style `30s`, `5m`, `1h`, `1m30s`, `250ms`."""
    _reject_bool(value, "a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = list(_DURATION_PART.finditer(text))
            if not text or "".join(p.group(0) for p in parts) != text:
                raise ValueError(f"{value!r} is not a duration (seconds, or like 30s, 5m, 1h)"
                                 ) from None
            seconds = sum(float(p.group(1)) * _UNIT_S[p.group(2)] for p in parts)
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds <= 0:
        raise ValueError(f"must be > 0 (got {value!r})")
    return seconds


_SIZE = re.compile(r"(\d+)\s*(b|kib|mib|gib)?", re.IGNORECASE)
_UNIT_B = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_size(value: Any) -> int:
    """Bytes: a number, or `256KiB`, `8MiB`, `1GiB`."""
    _reject_bool(value, "a size")
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{value!r} is not a size (bytes, or like 256KiB, 8MiB)")
    return int(m.group(1)) * _UNIT_B[(m.group(2) or "b").lower()]


def _ring_size(value: Any) -> int:
    n = parse_size(value)
    if n < RING_MIN or n > RING_MAX or n & (n - 1):
        raise ValueError(f"must be a power of two from 4KiB to 2GiB (got {value!r})")
    return n


def _positive_int(value: Any) -> int:
    n = _int(value, "an integer")
    if n <= 0:
        raise ValueError(f"must be > 0 (got {value!r})")
    return n


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_listen(value: Any) -> tuple[str, int]:
    """'HOST:PORT', '[IPv6]:PORT' or ':PORT' (every IPv4 address) -> (host, port).

    Port 0 asks the kernel for any free port."""
    bad = ValueError(f"{value!r} is not HOST:PORT")
    if not isinstance(value, str):
        raise bad
    text = value.strip()
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
    if m:
        host, port_text = m.groups()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit() or ":" in host:  # bare IPv6 wants [brackets]
            raise bad
        host = host or "0.0.0.0"
        if not _HOSTNAME.fullmatch(host):
            raise bad
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{value!r}: port {port} is not 0..65535")
    return host, port


def _listen(value: Any) -> str:
    host, port = parse_listen(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _optional(parse: Any) -> Any:
    return BeforeValidator(lambda v: None if v is None else parse(v))


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a file name (or '-' for stdout)")
    return value


def _url(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    try:
        u = urllib.parse.urlsplit(text)
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return text


class Settings(BaseModel):
    """Every option of `pyhttp2probe run`; the field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: Annotated[tuple[int, ...], _int_list("a pid", 1, 1 << 22)] = ()
    exe: Annotated[tuple[str, ...], BeforeValidator(_patterns)] = ()
    port: Annotated[tuple[int, ...], _int_list("a TCP port", 1, 65535)] = ()
    all: Annotated[bool, BeforeValidator(parse_bool)] = False
    exclude_exe: Annotated[tuple[str, ...], BeforeValidator(_patterns)] = ()
    listen: Annotated[str, BeforeValidator(_listen)] = DEFAULT_LISTEN
    spans_out: Annotated[str | None, _optional(_path)] = None
    otlp_endpoint: Annotated[str | None, _optional(_url)] = None
    series_ttl: Annotated[float, BeforeValidator(parse_duration)] = 300.0
    ring_size: Annotated[int, BeforeValidator(_ring_size)] = 8 * MIB
    rescan_interval: Annotated[float, BeforeValidator(parse_duration)] = 30.0
    max_label_sets: Annotated[int, BeforeValidator(_positive_int)] = 1000
    link_style: Annotated[Literal["auto", "uprobe_multi", "perf_event"],
                          BeforeValidator(_lower)] = "auto"
    log_level: Annotated[Literal["debug", "info", "warning", "error"],
                         BeforeValidator(_lower)] = "info"
    duration: Annotated[float | None, _optional(parse_duration)] = None

    @model_validator(mode="after")
    def _selects_something(self, info: ValidationInfo) -> Settings:
        partial = bool(info.context and info.context.get("partial"))
        if not partial and not (self.pid or self.exe or self.port or self.all):
            raise ValueError("nothing to trace: give --pid, --exe, --port or --all "
                             "(or PYHTTP2PROBE_PID/_EXE/_PORT/_ALL, or pid/exe/port/all in "
                             "the config file)")
        return self

    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def resolved_link_style(self) -> str | None:
        """The Agent's link_style argument: None lets it choose (auto)."""
        return None if self.link_style == "auto" else self.link_style


OPTIONS = tuple(Settings.model_fields)


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


# -- the command line ------------------------------------------------------------------

EPILOG = f"""\
Every option can also be set by an environment variable or a YAML file:
  flag --series-ttl 5m   =  {env_name('series_ttl')}=5m  =  YAML  series_ttl: 5m
  i.e. {ENV_PREFIX}<OPTION> and <option> with '_' for '-'; list options (pid, exe, port,
  exclude_exe) are comma-separated in a variable and a list in YAML; booleans are
  true/false/1/0/yes/no. An empty variable counts as unset.
  The YAML file is --config FILE or {CONFIG_ENV}=FILE.
Precedence: flags > {ENV_PREFIX}* variables > the YAML file > defaults.
An unknown YAML key or {ENV_PREFIX}* variable, or a bad value anywhere, exits 2 naming it.
Durations are seconds or like 30s, 5m, 1h; sizes are bytes or like 256KiB, 8MiB."""


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Declare run's flags. Nothing has an argparse default (SUPPRESS): only the flags a
    user gives reach the namespace, so they override the environment and file and nothing
    else; the defaults live in Settings. Values stay strings: Settings parses them."""
    s = argparse.SUPPRESS
    sel = p.add_argument_group("which processes (at least one of --pid/--exe/--port/--all)")
    sel.add_argument("--pid", action="append", default=s, metavar="PID",
                     help="trace this process (repeat, or comma-separate, for more)")
    sel.add_argument("--exe", action="append", default=s, metavar="PATTERN",
                     help="trace processes whose executable matches this glob: on the full "
                          "path, or on the base name when PATTERN has no '/' (repeatable)")
    sel.add_argument("--port", action="append", default=s, metavar="N",
                     help="trace the process listening on TCP port N (repeatable)")
    sel.add_argument("--all", action="store_true", default=s,
                     help="trace every Go process whose binary links grpc-go or an HTTP/2 "
                          "stack")
    sel.add_argument("--exclude-exe", action="append", default=s, metavar="PATTERN",
                     help="never trace executables matching this glob (as --exe; "
                          "repeatable; wins over every selection)")
    out = p.add_argument_group("output")
    out.add_argument("--listen", default=s, metavar="HOST:PORT",
                     help=f"serve /metrics, /healthz and /readyz here (default "
                          f"{DEFAULT_LISTEN}; [::1]:9464 for IPv6, :9464 for every IPv4 "
                          "address, port 0 for any free port)")
    out.add_argument("--spans-out", default=s, metavar="FILE|-",
                     help="also write every span as a JSON line to FILE, or '-' for stdout")
    out.add_argument("--otlp-endpoint", default=s, metavar="URL",
                     help="export every span over OTLP/HTTP (protobuf) to this base URL "
                          "('/v1/traces' is appended unless it ends so); wins over "
                          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP_ENDPOINT, "
                          "which also turn the export on")
    out.add_argument("--series-ttl", default=s, metavar="SECONDS",
                     help="drop a metric series not updated for this long: an exited "
                          "process's stay this long (default 300; e.g. 30s, 5m, 1h)")
    out.add_argument("--max-label-sets", default=s, metavar="N",
                     help="distinct label sets kept per metric before the excess folds "
                          "into _OTHER (default 1000)")
    tune = p.add_argument_group("agent")
    tune.add_argument("--ring-size", default=s, metavar="BYTES",
                      help="ring buffer of each BPF object: a power of two >= 4KiB "
                           "(default 8MiB; e.g. 256KiB, 16MiB)")
    tune.add_argument("--rescan-interval", default=s, metavar="SECONDS",
                      help="slow /proc rescan, the safety net under exec/exit events "
                           "(default 30)")
    tune.add_argument("--link-style", default=s, metavar="auto|uprobe_multi|perf_event",
                      help="uprobe link kind (default auto: uprobe_multi on kernels >= 6.6; "
                           "perf_event needs CAP_SYS_ADMIN)")
    tune.add_argument("--log-level", default=s, metavar="debug|info|warning|error",
                      help="log level (default info)")
    tune.add_argument("--duration", default=s, metavar="SECONDS",
                      help="stop after this long (default: until SIGINT/SIGTERM)")
    tune.add_argument("--config", default=s, metavar="FILE",
                      help=f"YAML file of options (also {CONFIG_ENV})")


# -- OTLP: OTEL_* variables are OpenTelemetry's, read as its specification says ----------

OTLP_PROTOCOL = "http/protobuf"
TRACES_PATH = "/v1/traces"


def _signal_url(base: str) -> str:
    """A base OTLP URL -> its traces URL (the spec: the signal path is appended)."""
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def otlp_traces_endpoint(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL to export to, or None when export is off.

    On when --otlp-endpoint (or PYHTTP2PROBE_OTLP_ENDPOINT / otlp_endpoint) is given: a base
    URL, '/v1/traces' appended; else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as is; else
    OTEL_EXPORTER_OTLP_ENDPOINT, '/v1/traces' appended. The protocol
    (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL) must be
    http/protobuf, the default; anything else is a ConfigError naming the variable."""
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if settings.otlp_endpoint:  # validated with the settings
        url = _signal_url(settings.otlp_endpoint)
    elif traces or base:
        name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" if traces else "OTEL_EXPORTER_OTLP_ENDPOINT"
        try:
            url = _url(traces) if traces else _signal_url(_url(base))
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    else:
        return None
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(var, "").strip()
        if protocol:
            if protocol != OTLP_PROTOCOL:
                raise ConfigError(f"{var}: {protocol!r} is not supported: only "
                                  f"{OTLP_PROTOCOL!r} (OTLP over HTTP, protobuf) is")
            break
    return url


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def run_parser() -> argparse.ArgumentParser:
    """A standalone parser of run's flags whose errors raise ConfigError."""
    p = _RaisingParser(prog="pyhttp2probe run", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    return p


def parse_run_args(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """The settings of `run ARGV…` in this environment; raises ConfigError."""
    return settings_from_args(run_parser().parse_args(list(argv)), environ)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings from parsed run flags (only those given) + environment + YAML file."""
    given = vars(args)
    flags = {k: given[k] for k in OPTIONS if k in given}
    env = _from_environ(environ)
    config = given.get("config") or environ.get(CONFIG_ENV) or None
    sources: list[tuple[dict[str, Any], Any]] = []  # weakest first
    if config is not None:
        sources.append((_from_file(config), lambda k: f"config file {config}: {k}"))
    sources += [(env, env_name), (flags, flag_name)]
    merged: dict[str, Any] = {}
    errors: list[str] = []
    for values, name in sources:
        try:
            checked = Settings.model_validate(values, context={"partial": True})
        except ValidationError as e:
            errors += _describe(e, name)
            continue
        merged.update({k: getattr(checked, k) for k in values})
    if errors:
        raise ConfigError("; ".join(errors))
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError("; ".join(_describe(e, flag_name))) from None


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    known = {env_name(k): k for k in OPTIONS}
    out: dict[str, Any] = {}
    unknown = []
    for var, value in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        key = known.get(var)
        if key is None:
            suffix = var.removeprefix(ENV_PREFIX).lower()
            close = difflib.get_close_matches(suffix, [*OPTIONS, "config"], n=1, cutoff=0.6)
            hint = f" (did you mean {env_name(close[0])!r}?)" if close else ""
            unknown.append(f"{var}: unknown variable{hint}")
        elif value.strip():
            out[key] = value.split(",") if key in LIST_OPTIONS else value
    if unknown:
        raise ConfigError("; ".join(unknown))
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (plain PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _from_file(path: str) -> dict[str, Any]:
    where = f"config file {path}"
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_StrictLoader)  # a SafeLoader: no object tags
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text: {e.reason}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of option: value, not "
                          f"{type(data).__name__}")
    unknown = [f"{where}: unknown key {str(k)!r}{_hint(str(k), OPTIONS)}"
               for k in data if k not in OPTIONS]
    if unknown:
        raise ConfigError("; ".join(unknown))
    return data


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(e: ValidationError, name: Any) -> list[str]:
    """One line per pydantic error: '<source and key>: <what is wrong>'."""
    out = []
    for err in e.errors():
        loc = err.get("loc") or ()
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] != "value_error":  # pydantic's own wording: say what was given
            msg = f"{err['input']!r}: {msg[:1].lower()}{msg[1:]}"
        out.append(f"{name(loc[0])}: {msg}" if loc else msg)
    return out
