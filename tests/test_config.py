"""`pyhttp2probe run` settings: flags > PYHTTP2PROBE_* > YAML file > defaults; every bad
value or unknown name is one ConfigError naming its source and key; run exits 2 on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyhttp2probe import __version__
from pyhttp2probe.config import (
    OPTIONS,
    ConfigError,
    Settings,
    env_name,
    flag_name,
    otlp_traces_endpoint,
    parse_run_args,
)

ROOT = Path(__file__).resolve().parent.parent


def _yaml(tmp_path: Path, data: Any, name: str = "agent.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def _error(argv: list[str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse_run_args(argv, environ or {})
    return str(e.value)


def test_defaults_apply_to_every_option_not_given() -> None:
    s = parse_run_args(["--pid", "7"], {})
    assert s.model_dump() == {
        "pid": (7,), "exe": (), "port": (), "all": False, "exclude_exe": (),
        "listen": "127.0.0.1:9464", "spans_out": None, "otlp_endpoint": None,
        "series_ttl": 300.0, "ring_size": 8 << 20, "rescan_interval": 30.0, "max_label_sets": 1000,
        "link_style": "auto", "log_level": "info", "duration": None}
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 9464)
    assert set(OPTIONS) == set(s.model_dump())


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"exe": ["a-*", "b-*"], "listen": "127.0.0.1:1001",
                            "series_ttl": "10s", "log_level": "debug", "all": True,
                            "max_label_sets": 5})
    env = {"PYHTTP2PROBE_CONFIG": path, "PYHTTP2PROBE_LISTEN": "127.0.0.1:1002",
           "PYHTTP2PROBE_EXE": "c-*", "PYHTTP2PROBE_MAX_LABEL_SETS": "6"}
    s = parse_run_args(["--listen", "127.0.0.1:1003", "--pid", "1"], env)
    assert s.listen == "127.0.0.1:1003"          # flag over env over file
    assert s.exe == ("c-*",)                     # env over file; lists replace, never merge
    assert s.max_label_sets == 6                 # env over file
    assert s.series_ttl == 10.0 and s.log_level == "debug" and s.all  # file over default
    assert s.pid == (1,) and s.ring_size == 8 << 20                   # flag; default
    s = parse_run_args([], env)
    assert s.listen == "127.0.0.1:1002" and s.all and s.pid == ()


def test_flags_not_given_never_mask_the_environment_or_file(tmp_path: Path) -> None:
    # store_true and append flags included: absent means "not said", not False or []
    path = _yaml(tmp_path, {"all": True, "exclude_exe": ["sh"], "duration": "1m"})
    s = parse_run_args(["--config", path], {"PYHTTP2PROBE_PORT": "8080,9090"})
    assert s.all and s.exclude_exe == ("sh",) and s.duration == 60.0
    assert s.port == (8080, 9090)


def test_config_flag_beats_config_variable(tmp_path: Path) -> None:
    a = _yaml(tmp_path, {"pid": [1]}, "a.yaml")
    b = _yaml(tmp_path, {"pid": [2]}, "b.yaml")
    assert parse_run_args(["--config", a], {"PYHTTP2PROBE_CONFIG": b}).pid == (1,)
    assert parse_run_args([], {"PYHTTP2PROBE_CONFIG": b}).pid == (2,)


def test_every_option_from_each_source(tmp_path: Path) -> None:
    values = {"pid": "3", "exe": "srv", "port": "50051", "all": "yes", "exclude_exe": "sh",
              "listen": "[::1]:0", "spans_out": "-", "otlp_endpoint": "http://c:4318",
              "series_ttl": "5m", "ring_size": "256KiB", "rescan_interval": "1h",
              "max_label_sets": "10", "link_style": "perf_event",
              "log_level": "warning", "duration": "30s"}
    assert set(values) == set(OPTIONS)
    want = {"pid": (3,), "exe": ("srv",), "port": (50051,), "all": True,
            "exclude_exe": ("sh",), "listen": "[::1]:0", "spans_out": "-",
            "otlp_endpoint": "http://c:4318", "series_ttl": 300.0,
            "ring_size": 256 << 10, "rescan_interval": 3600.0, "max_label_sets": 10,
            "link_style": "perf_event", "log_level": "warning", "duration": 30.0}
    argv: list[str] = []
    for key, value in values.items():
        argv += [flag_name(key)] if key == "all" else [flag_name(key), value]
    got_flags = parse_run_args(argv, {}).model_dump()
    got_env = parse_run_args([], {env_name(k): v for k, v in values.items()}).model_dump()
    got_file = parse_run_args(["--config", _yaml(tmp_path, values)], {}).model_dump()
    assert got_flags == got_env == got_file == want


def test_yaml_native_types_and_lists(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "pid: [10, '11', 10]\nexe: one-pattern\nport: 8443\nall: no\n"
                           "series_ttl: 1.5\nring_size: 16384\nduration: null\n")
    s = parse_run_args(["--config", path], {})
    assert s.pid == (10, 11) and s.exe == ("one-pattern",) and s.port == (8443,)
    assert s.all is False and s.series_ttl == 1.5 and s.ring_size == 16384
    assert s.duration is None


def test_repeated_and_comma_separated_pids() -> None:
    assert parse_run_args(["--pid", "1", "--pid", "2,3", "--pid", "1"], {}).pid == (1, 2, 3)
    assert parse_run_args([], {"PYHTTP2PROBE_PID": "4, 5,6"}).pid == (4, 5, 6)


@pytest.mark.parametrize(("text", "seconds"), [
    ("300", 300.0), ("0.5", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
    ("1m30s", 90.0), ("250ms", 0.25), ("1.5h", 5400.0), (" 2s ", 2.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_run_args(["--all", "--series-ttl", text], {}).series_ttl == seconds


@pytest.mark.parametrize("text", ["5x", "-1", "0", "0s", "inf", "nan", "5 m", "m", "1h-1m"])
def test_bad_durations_name_the_flag(text: str) -> None:
    msg = _error(["--all", "--series-ttl", text])
    assert msg.startswith("--series-ttl: ") and repr(text) in msg


def test_zero_ttl_says_it_must_be_positive() -> None:
    assert _error(["--all", "--series-ttl", "0"]).startswith("--series-ttl: must be > 0")


@pytest.mark.parametrize(("text", "size"), [
    ("8MiB", 8 << 20), ("256KiB", 256 << 10), ("4096", 4096), ("1GiB", 1 << 30),
    ("16kib", 16 << 10), ("2GiB", 2 << 30)])
def test_ring_sizes(text: str, size: int) -> None:
    assert parse_run_args(["--all", "--ring-size", text], {}).ring_size == size


@pytest.mark.parametrize("text", ["5000", "2048", "8MB", "8M", "4GiB", "0", "-4096", "x"])
def test_bad_ring_sizes_name_the_flag(text: str) -> None:
    msg = _error(["--all", "--ring-size", text])
    assert msg.startswith("--ring-size: ") and repr(text) in msg


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:9464", "127.0.0.1", 9464), ("[::1]:9464", "::1", 9464),
    (":9464", "0.0.0.0", 9464), ("localhost:0", "localhost", 0),
    ("[::]:80", "::", 80), ("node-1.example:9464", "node-1.example", 9464)])
def test_listen(text: str, host: str, port: int) -> None:
    s = parse_run_args(["--all", "--listen", text], {})
    assert (s.listen_host, s.listen_port) == (host, port)


@pytest.mark.parametrize("text", ["abc", "::1:9464", "1.2.3.4:70000", "[zz]:1", "host:",
                                  "a b:1", "1.2.3.4:-1"])
def test_bad_listen_names_the_variable(text: str) -> None:
    msg = _error([], {"PYHTTP2PROBE_LISTEN": text, "PYHTTP2PROBE_ALL": "1"})
    assert msg.startswith("PYHTTP2PROBE_LISTEN: ") and repr(text) in msg


def test_listen_error_reads_as_documented() -> None:
    assert (_error([], {"PYHTTP2PROBE_LISTEN": "abc", "PYHTTP2PROBE_ALL": "1"})
            == "PYHTTP2PROBE_LISTEN: 'abc' is not HOST:PORT")


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True),
    ("false", False), ("0", False), ("No", False)])
def test_boolean_variables(text: str, value: bool) -> None:
    assert parse_run_args(["--pid", "1"], {"PYHTTP2PROBE_ALL": text}).all is value


@pytest.mark.parametrize(("key", "bad", "fragment"), [
    ("pid", "x", "is not a pid"), ("pid", "0", "is not a pid"), ("pid", "1,x", "'x'"),
    ("port", "70000", "is not a TCP port"), ("port", "http", "is not a TCP port"),
    ("all", "maybe", "is not a boolean"), ("max_label_sets", "0", "must be > 0"),
    ("max_label_sets", "many", "is not an integer"), ("rescan_interval", "0", "must be > 0"),
    ("duration", "soon", "is not a duration"), ("link_style", "kprobe", "'auto'"),
    ("log_level", "verbose", "'debug'"), ("ring_size", "3MiB", "power of two")])
def test_bad_values_name_source_and_key(tmp_path: Path, key: str, bad: str,
                                        fragment: str) -> None:
    """The same bad value, from each source, is named by that source's spelling."""
    base = {} if key in ("pid", "all") else {"PYHTTP2PROBE_ALL": "1"}
    if key != "all":  # --all takes no value
        msg = _error([flag_name(key), bad], base)
        assert msg.startswith(f"{flag_name(key)}: ") and fragment in msg, msg
    msg = _error([], {**base, env_name(key): bad})
    assert msg.startswith(f"{env_name(key)}: ") and fragment in msg, msg
    path = _yaml(tmp_path, {key: bad})
    msg = _error(["--config", path], base)
    assert msg.startswith(f"config file {path}: {key}: ") and fragment in msg, msg


def test_yaml_type_errors_name_the_key(tmp_path: Path) -> None:
    for data, key in (({"pid": [True]}, "pid"), ({"exe": [""]}, "exe"), ({"exe": [3]}, "exe"),
                      ({"series_ttl": True}, "series_ttl"), ({"listen": 9464}, "listen"),
                      ({"spans_out": ""}, "spans_out"), ({"ring_size": [1]}, "ring_size")):
        path = _yaml(tmp_path, data)
        assert _error(["--config", path, "--all"]).startswith(f"config file {path}: {key}: ")


def test_a_bad_value_is_reported_even_where_a_flag_overrides_it(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"series_ttl": "-5"})
    msg = _error(["--config", path, "--all", "--series-ttl", "5"],
                 {"PYHTTP2PROBE_RING_SIZE": "3"})
    assert f"config file {path}: series_ttl: must be > 0" in msg
    assert "PYHTTP2PROBE_RING_SIZE: " in msg


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"exclude": ["sh"], "pid": [1]})
    msg = _error(["--config", path])
    assert msg.startswith(f"config file {path}: unknown key 'exclude'")
    assert "exclude_exe" in msg  # the hint
    path = _yaml(tmp_path, {"config": "other.yaml", "all": True})  # a flag, not a key
    assert _error(["--config", path]) == f"config file {path}: unknown key 'config'"


def test_unknown_variable_is_named() -> None:
    msg = _error(["--all"], {"PYHTTP2PROBE_GOBIN_CACHE": "/tmp/x", "PATH": "/bin"})
    assert msg == "PYHTTP2PROBE_GOBIN_CACHE: unknown variable"
    msg = _error(["--all"], {"PYHTTP2PROBE_SERIES_TL": "5m"})
    assert msg == ("PYHTTP2PROBE_SERIES_TL: unknown variable "
                   "(did you mean 'PYHTTP2PROBE_SERIES_TTL'?)")


def test_empty_variable_counts_as_unset() -> None:
    s = parse_run_args(["--all"], {"PYHTTP2PROBE_LISTEN": "", "PYHTTP2PROBE_PID": " "})
    assert s.listen == "127.0.0.1:9464" and s.pid == ()


def test_choices_ignore_case() -> None:
    s = parse_run_args(["--all", "--log-level", "DEBUG", "--link-style", "Uprobe_Multi"], {})
    assert (s.log_level, s.link_style) == ("debug", "uprobe_multi")
    assert s.resolved_link_style == "uprobe_multi"
    assert parse_run_args(["--all"], {}).resolved_link_style is None


def test_nothing_selected_names_the_selection_flags(tmp_path: Path) -> None:
    for argv in ([], ["--exclude-exe", "sh"], ["--listen", ":1"]):
        msg = _error(argv)
        assert all(f in msg for f in ("--pid", "--exe", "--port", "--all")), msg
    assert "--pid" in _error([], {"PYHTTP2PROBE_ALL": "false"})
    path = _yaml(tmp_path, "")  # an empty file is no options at all
    assert "nothing to trace" in _error(["--config", path])


@pytest.mark.parametrize(("text", "fragment"), [
    ("pid: [1\n", "not valid YAML"), ("- pid\n- 1\n", "must be a mapping"),
    ("pid: [1]\npid: [2]\n", "key 'pid' given twice (line 2"),
    ("all: !!python/object:os.system x\n", "not valid YAML")])
def test_bad_yaml_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = _yaml(tmp_path, text)
    msg = _error(["--config", path])
    assert msg.startswith(f"config file {path}: ") and fragment in msg, msg


def test_missing_config_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    assert _error([], {"PYHTTP2PROBE_CONFIG": path}) == (
        f"config file {path}: cannot read: No such file or directory")


def test_bad_flag_syntax_is_a_config_error() -> None:
    assert "--bogus" in _error(["--all", "--bogus"])
    assert "--listen" in _error(["--all", "--listen"])


def test_settings_are_frozen_and_closed() -> None:
    s = parse_run_args(["--all"], {})
    with pytest.raises(ValueError, match="frozen"):
        s.all = False  # type: ignore[misc]
    with pytest.raises(ValueError, match="bogus"):
        Settings.model_validate({"all": True, "bogus": 1})


# -- through the command line -----------------------------------------------------------

def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYHTTP2PROBE_")}
    return subprocess.run([sys.executable, "-m", "pyhttp2probe", *args], cwd=ROOT,
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def test_run_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    for args, env, line in (
            (["run", "--pid", "1", "--series-ttl", "0"], {},
             "--series-ttl: must be > 0 (got '0')"),
            (["run", "--pid", "1"], {"PYHTTP2PROBE_LISTEN": "abc"},
             "PYHTTP2PROBE_LISTEN: 'abc' is not HOST:PORT"),
            (["run", "--pid", "1"], {"PYHTTP2PROBE_EXCLUDE": "sh"},
             "PYHTTP2PROBE_EXCLUDE: unknown variable (did you mean "
             "'PYHTTP2PROBE_EXCLUDE_EXE'?)")):
        p = _cli(*args, env=env)
        assert (p.returncode, p.stderr, p.stdout) == (2, f"pyhttp2probe: error: {line}\n", "")
    path = _yaml(tmp_path, {"exclude": ["sh"]})
    p = _cli("run", "--config", path)
    assert p.returncode == 2
    assert p.stderr.startswith(f"pyhttp2probe: error: config file {path}: unknown key "
                               "'exclude'") and p.stderr.count("\n") == 1


def test_help_documents_every_option_and_the_other_sources() -> None:
    p = _cli("run", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())  # help lines wrap with the terminal width
    for key in OPTIONS:
        assert flag_name(key) in text, key
    for part in ("--config", "PYHTTP2PROBE_CONFIG", "PYHTTP2PROBE_<OPTION>",
                 "PYHTTP2PROBE_SERIES_TTL=5m", "series_ttl: 5m", "Precedence: flags >",
                 "default 127.0.0.1:9464", "default 300", "default 8MiB", "default 30",
                 "default 1000", "default auto", "default info"):
        assert part in text, part


def test_version() -> None:
    p = _cli("--version")
    assert (p.returncode, p.stdout) == (0, f"pyhttp2probe {__version__}\n")


# -- OTLP: on with --otlp-endpoint or OpenTelemetry's own OTEL_EXPORTER_OTLP_* variables ----

def _otlp(argv: list[str], environ: dict[str, str]) -> str | None:
    return otlp_traces_endpoint(parse_run_args(["--all", *argv], environ), environ)


def test_otlp_export_is_off_unless_an_endpoint_is_given() -> None:
    assert _otlp([], {}) is None
    assert _otlp([], {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None  # off: not judged


def test_otlp_endpoints_as_the_opentelemetry_specification_reads_them(tmp_path: Path) -> None:
    base, traces = "http://b:4318", "http://t:4318/custom/path"
    assert _otlp([], {"OTEL_EXPORTER_OTLP_ENDPOINT": base}) == "http://b:4318/v1/traces"
    assert _otlp([], {"OTEL_EXPORTER_OTLP_ENDPOINT": base + "/"}) == "http://b:4318/v1/traces"
    # the per-signal variable is used as is, and wins over the base one
    assert _otlp([], {"OTEL_EXPORTER_OTLP_ENDPOINT": base,
                      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces}) == traces
    # ours is a base URL too, and wins over both OTEL_* variables
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces}
    assert _otlp(["--otlp-endpoint", "http://o:1"], env) == "http://o:1/v1/traces"
    assert _otlp(["--otlp-endpoint", "https://o/v1/traces"], env) == "https://o/v1/traces"
    assert _otlp([], {**env, "PYHTTP2PROBE_OTLP_ENDPOINT": "http://e:2"}) == \
        "http://e:2/v1/traces"
    path = _yaml(tmp_path, {"otlp_endpoint": "http://y:3"})
    assert _otlp(["--config", path], {}) == "http://y:3/v1/traces"


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_otlp_protocols_other_than_http_protobuf_are_refused(protocol: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://b:4318"}
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        want = rf"^{var}: {re.escape(repr(protocol))} is not supported"
        with pytest.raises(ConfigError, match=want):
            _otlp([], {**env, var: protocol})
    assert _otlp([], {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    # the per-signal variable wins over the general one
    assert _otlp([], {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})


@pytest.mark.parametrize("url", ["collector:4318", "ftp://c", "http://", "http://c:99999"])
def test_bad_otlp_endpoints_name_their_source(url: str) -> None:
    assert _error(["--all", "--otlp-endpoint", url]).startswith("--otlp-endpoint: ")
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT: "):
        _otlp([], {"OTEL_EXPORTER_OTLP_ENDPOINT": url})


def test_run_exits_2_when_otlp_grpc_is_asked() -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    proc = subprocess.run([sys.executable, "-m", "pyhttp2probe", "run", "--all"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not supported" in proc.stderr
