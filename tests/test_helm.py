"""The Helm chart (deploy/helm/pyhttp2probe) and the plain manifests rendered from it.

Real tools, offline: helm v3.22.0 built by ci/setup-helm.sh (lints and renders against
Kubernetes 1.37, not the 1.20 of a plain `go install`), every rendered object validated by
kubernetes-validate against the Kubernetes JSON schemas in strict mode (unknown fields are
errors), and the ConfigMap read by the agent's own config parser. The ServiceMonitor is a
CRD kubernetes-validate has no schema for: its shape is checked against a schema written
here from the prometheus-operator's ServiceMonitor v1 API (the fields the chart uses, no
others allowed).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pyhttp2probe.config import OPTIONS, ConfigError, parse_run_args

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "pyhttp2probe"
MANIFESTS = ROOT / "deploy" / "kubernetes" / "pyhttp2probe.yaml"
RELEASE = NAMESPACE = "pyhttp2probe"
CONFIG_PATH = "/etc/pyhttp2probe/config.yaml"
CAPS = {"BPF", "PERFMON", "SYS_PTRACE"}
# kubernetes-validate's oldest and newest Kubernetes, and one in between.
KUBE_VERSIONS = ("1.25", "1.31", "latest")

# Chart values for each variant the objects are validated in.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "privileged": {"securityContext": {"privileged": True}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"},
                                           "relabelings": [{"action": "labeldrop",
                                                            "regex": "pod"}]},
                        "scrapeAnnotations": {"enabled": False}},
    "custom-config": {"config": {
        "all": False, "exe": ["checkout-*", "/opt/*/bin/api"], "port": [8443, 50051],
        "exclude_exe": ["envoy*"], "listen": "[::]:9464", "series_ttl": "10m",
        "ring_size": "16MiB", "rescan_interval": 60, "max_label_sets": 500,
        "link_style": "uprobe_multi", "log_level": "debug", "spans_out": "-"}},
    "runtime-default-seccomp": {"seccompProfile": {"type": "RuntimeDefault"}},
    "unconfined-seccomp": {"seccompProfile": {"type": "Unconfined"}},
    "perf-event": {"config": {"link_style": "perf_event"},
                   "securityContext": {"extraCapabilities": ["SYS_ADMIN"]}},
    "bare": {"serviceAccount": {"create": False}, "service": {"enabled": False},
             "hostMounts": {"tracefs": {"enabled": False}}, "tolerations": [],
             "resources": {}, "nodeSelector": {}},
    "extras": {"image": {"repository": "registry.example/obs/pyhttp2probe",
                         "digest": "sha256:" + "ab" * 32},
               "metricsPort": 9500, "extraArgs": ["--log-level", "warning"],
               "extraEnv": [{"name": "PYHTTP2PROBE_SERIES_TTL", "value": "1h"}],
               "priorityClassName": "system-node-critical",
               "podAnnotations": {"team": "obs"}, "podLabels": {"tier": "node"},
               "imagePullSecrets": [{"name": "regcred"}]},
}


# -- tools --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary ci/setup-helm.sh builds (once, ~90 s) and caches."""
    done = subprocess.run(["bash", str(ROOT / "ci" / "setup-helm.sh")], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, f"ci/setup-helm.sh failed:\n{done.stderr}"
    path = done.stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), done.stdout
    return path


@pytest.fixture(scope="session")
def kv(helm: str) -> Any:
    """kubernetes_validate, which ci/setup-helm.sh installs (maybe in this very session)."""
    importlib.invalidate_caches()
    return importlib.import_module("kubernetes_validate")


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}{done.stdout}"
    return done


def template_args(values: dict[str, Any], tmp_path: Path) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values:
        f = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["--values", str(f)]
    return args


def render(helm: str, tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict]:
    out = run_helm(helm, *template_args(values or {}, tmp_path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refused(helm: str, tmp_path: Path, values: dict[str, Any]) -> str:
    done = run_helm(helm, *template_args(values, tmp_path), check=False)
    assert done.returncode != 0, f"helm template accepted {values}:\n{done.stdout}"
    return done.stderr


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def agent_container(objects: list[dict]) -> dict:
    (container,) = one(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


def image_environment() -> dict[str, str]:
    """The PYHTTP2PROBE_* variables the agent's image sets (ENV lines of the Containerfile)."""
    containerfile = ROOT / "Containerfile"
    if not containerfile.exists():
        return {}
    text = containerfile.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(PYHTTP2PROBE_\w+)=(\S*)", line))
    return env


def agent_settings(objects: list[dict], tmp_path: Path) -> Any:
    """The settings the agent would run with in the pod: its own parser reads the
    ConfigMap's config.yaml, the container's args and its environment over the image's."""
    f = tmp_path / "config.yaml"
    f.write_text(one(objects, "ConfigMap")["data"]["config.yaml"])
    c = agent_container(objects)
    assert c["args"][:3] == ["run", "--config", CONFIG_PATH]
    environ = image_environment()
    environ.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return parse_run_args(["--config", str(f), *c["args"][3:]], environ)


# -- the tools themselves --------------------------------------------------------------------

def test_setup_helm_builds_helm_for_current_kubernetes(helm: str, tmp_path: Path) -> None:
    """Without the ldflags helm would say v3.22 and render against Kubernetes v1.20.0."""
    assert run_helm(helm, "version", "--template", "{{.Version}}").stdout == "v3.22.0"
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "kube.yaml").write_text(
        "kube: {{ .Capabilities.KubeVersion.Version }}\n")
    out = run_helm(helm, "template", str(chart)).stdout
    assert "kube: v1.37.0" in out, out


def test_setup_helm_is_fast_and_quiet_once_installed(helm: str) -> None:
    done = subprocess.run(["bash", str(ROOT / "ci" / "setup-helm.sh")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == helm + "\n"
    assert done.stderr == ""


# -- lint --------------------------------------------------------------------------------

@pytest.mark.parametrize("sets", [
    [],
    ["securityContext.privileged=true"],
    ["serviceMonitor.enabled=true", "seccompProfile.type=RuntimeDefault"],
], ids=["defaults", "privileged", "service-monitor"])
def test_chart_lints_clean_in_strict_mode(helm: str, sets: list[str]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        args += ["--set", s]
    out = run_helm(helm, *args).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


# -- every object valid Kubernetes ----------------------------------------------------------

SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    # monitoring.coreos.com/v1 ServiceMonitor, the part the chart writes; unknown fields
    # are refused (a typo would be pruned silently by the API server).
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array",
                                                  "items": {"type": "string"}}}},
                "selector": {
                    "type": "object", "additionalProperties": False, "minProperties": 1,
                    "properties": {
                        "matchLabels": {"type": "object",
                                        "additionalProperties": {"type": "string"}},
                        "matchExpressions": {"type": "array"}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^(0|(\d+(ms|s|m|h))+)$"},
                        "scrapeTimeout": {"type": "string",
                                          "pattern": r"^(0|(\d+(ms|s|m|h))+)$"},
                        "relabelings": {"$ref": "#/$defs/relabelings"},
                        "metricRelabelings": {"$ref": "#/$defs/relabelings"}}}},
            },
        },
    },
    "$defs": {"relabelings": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop",
                                "hashmod", "HashMod", "labelmap", "LabelMap", "labeldrop",
                                "LabelDrop", "labelkeep", "LabelKeep", "lowercase",
                                "Lowercase", "uppercase", "Uppercase", "keepequal",
                                "KeepEqual", "dropequal", "DropEqual"]},
            "sourceLabels": {"type": "array",
                             "items": {"type": "string",
                                       "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
            "separator": {"type": "string"}, "targetLabel": {"type": "string"},
            "regex": {"type": "string"}, "modulus": {"type": "integer", "minimum": 0},
            "replacement": {"type": "string"}}}}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rendered_object_is_valid_kubernetes(helm: str, kv: Any, tmp_path: Path,
                                                   variant: str) -> None:
    objects = render(helm, tmp_path, VARIANTS[variant])
    latest = kv.utils.latest_version()
    assert [int(x) for x in latest.split(".")] >= [1, 37], latest
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("namespace") == NAMESPACE, name
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            continue
        for version in KUBE_VERSIONS:
            version = latest if version == "latest" else version
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{variant}: {name} is not valid Kubernetes {version}: "
                            f"{e.message}")
    kinds = sorted(o["kind"] for o in objects)
    expected = {"ConfigMap", "DaemonSet", "Service", "ServiceAccount"}
    if variant == "bare":
        expected -= {"Service", "ServiceAccount"}
    if variant == "service-monitor":
        expected.add("ServiceMonitor")
    assert kinds == sorted(expected)


# -- the DaemonSet's privileges ---------------------------------------------------------------

def test_default_agent_holds_exactly_bpf_perfmon_sys_ptrace(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert "hostNetwork" not in pod and "hostIPC" not in pod
    sc = agent_container(objects)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == sorted(CAPS)
    assert sc["runAsUser"] == 0  # added capabilities reach uid 0 only
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "Localhost",
                                    "localhostProfile": "profiles/pyhttp2probe.json"}
    assert "securityContext" not in pod or "seccompProfile" not in pod["securityContext"]
    assert pod["tolerations"] == [{"operator": "Exists"}]  # control plane too


def test_privileged_variant_for_kernels_where_caps_do_not_suffice(helm: str,
                                                                   tmp_path: Path) -> None:
    sc = agent_container(render(helm, tmp_path, VARIANTS["privileged"]))["securityContext"]
    assert sc["privileged"] is True
    # Kubernetes refuses privileged with allowPrivilegeEscalation false; a privileged
    # container has every capability and no seccomp filter, so neither is written.
    assert sc["allowPrivilegeEscalation"] is True
    assert "capabilities" not in sc and "seccompProfile" not in sc


@pytest.mark.parametrize("profile", [
    {"type": "RuntimeDefault"}, {"type": "Unconfined"},
    {"type": "RuntimeDefault", "localhostProfile": "profiles/ignored.json"},
    {"type": "Localhost", "localhostProfile": "operator/pyhttp2probe/agent.json"},
], ids=["runtime-default", "unconfined", "runtime-default-ignores-path", "localhost-path"])
def test_seccomp_profile_is_a_value(helm: str, tmp_path: Path, profile: dict) -> None:
    objects = render(helm, tmp_path, {"seccompProfile": profile})
    got = agent_container(objects)["securityContext"]["seccompProfile"]
    want = dict(profile) if profile["type"] == "Localhost" else {"type": profile["type"]}
    assert got == want


def test_extra_capabilities_add_to_the_three(helm: str, tmp_path: Path) -> None:
    sc = agent_container(render(helm, tmp_path, VARIANTS["perf-event"]))["securityContext"]
    assert sorted(sc["capabilities"]["add"]) == sorted(CAPS | {"SYS_ADMIN"})
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["privileged"] is False
    for values in ({"securityContext": {"extraCapabilities": ["CAP_SYS_ADMIN"]}},
                   {"securityContext": {"privileged": True}}):
        render(helm, tmp_path, {"config": {"link_style": "perf_event"}, **values})


def test_btf_and_tracefs_are_read_only_host_mounts(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in agent_container(objects)["volumeMounts"]}
    for name, path in (("btf", "/sys/kernel/btf"), ("tracefs", "/sys/kernel/tracing")):
        assert volumes[name]["hostPath"] == {"path": path, "type": "Directory"}
        assert mounts[name] == {"name": name, "mountPath": path, "readOnly": True}
    host = [v["name"] for v in pod["volumes"] if "hostPath" in v]
    assert sorted(host) == ["btf", "tracefs"]
    assert all(m.get("readOnly") for m in mounts.values() if m["name"] in host)
    bare = render(helm, tmp_path, VARIANTS["bare"])
    assert [v["name"] for v in one(bare, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
            if "hostPath" in v] == ["btf"]


# -- probes, ports, config ---------------------------------------------------------------------

@pytest.mark.parametrize("port", [9464, 9500])
def test_probes_service_and_scrape_annotations_share_the_listen_port(
        helm: str, tmp_path: Path, port: int) -> None:
    objects = render(helm, tmp_path, {} if port == 9464 else {"metricsPort": port})
    c = agent_container(objects)
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    settings = agent_settings(objects, tmp_path)
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", port)
    (sport,) = one(objects, "Service")["spec"]["ports"]
    assert (sport["port"], sport["targetPort"]) == (port, "metrics")
    meta = one(objects, "DaemonSet")["spec"]["template"]["metadata"]
    assert {k: v for k, v in meta["annotations"].items() if k.startswith("prometheus.io/")} \
        == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"}


def test_default_config_is_a_valid_agent_config(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    settings = agent_settings(objects, tmp_path)
    assert settings.all is True and not (settings.exe or settings.port or settings.pid)
    assert settings.listen == "0.0.0.0:9464"
    assert settings.series_ttl == 300 and settings.rescan_interval == 30
    assert settings.ring_size == 8 << 20 and settings.max_label_sets == 1000
    assert (settings.link_style, settings.log_level) == ("auto", "info")
    assert settings.duration is None and settings.spans_out is None
    c = agent_container(objects)
    assert c["command"] == ["pyhttp2probe"]
    assert c["args"] == ["run", "--config", CONFIG_PATH]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/config.yaml" == CONFIG_PATH
    volume = next(v for v in one(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "config")
    assert volume["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]


def test_custom_config_values_reach_the_agent(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, VARIANTS["custom-config"])
    s = agent_settings(objects, tmp_path)
    assert s.all is False
    assert s.exe == ("checkout-*", "/opt/*/bin/api") and s.port == (8443, 50051)
    assert s.exclude_exe == ("envoy*",)
    assert (s.listen_host, s.listen_port) == ("::", 9464)
    assert s.series_ttl == 600 and s.rescan_interval == 60
    assert s.ring_size == 16 << 20 and s.max_label_sets == 500
    assert (s.link_style, s.log_level, s.spans_out) == ("uprobe_multi", "debug", "-")
    # A --set value arrives as helm's own types; a big size must stay an integer.
    sets = ["config.ring_size=1073741824", "config.max_label_sets=20000",
            "config.exe={api,web}", "config.port={443}", "config.pid={1,2}"]
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        args += ["--set", item]
    objects = [d for d in yaml.safe_load_all(run_helm(helm, *args).stdout) if d]
    s = agent_settings(objects, tmp_path)
    assert (s.ring_size, s.max_label_sets) == (1 << 30, 20000)
    assert (s.exe, s.port, s.pid, s.all) == (("api", "web"), (443,), (1, 2), True)


def test_values_schema_knows_exactly_the_agent_options() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False
    # duration would stop the agent and make the DaemonSet restart it: left out on purpose.
    assert set(config["properties"]) == set(OPTIONS) - {"duration"}
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    assert set(defaults) <= set(config["properties"])


@pytest.mark.parametrize(("values", "says"), [
    ({"config": {"colour": "blue"}}, "colour"),
    ({"config": {"duration": "1h"}}, "duration"),
    ({"config": {"link_style": "kprobe"}}, "link_style"),
    ({"config": {"listen": "0.0.0.0:9000"}}, "metricsPort 9464"),
    ({"config": {"listen": "127.0.0.1:9464"}}, "loopback"),
    ({"config": {"all": False}}, "selects no process"),
    ({"config": {"link_style": "perf_event"}}, "CAP_SYS_ADMIN"),
    ({"seccompProfile": {"type": "Default"}}, "seccompProfile"),
    ({"seccompProfile": {"type": "Localhost", "localhostProfile": ""}}, "localhostProfile"),
    ({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}, "service.enabled"),
    ({"hostPID": False}, "hostPID"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_values_that_would_break_every_pod_are_refused(helm: str, tmp_path: Path,
                                                       values: dict, says: str) -> None:
    assert says in refused(helm, tmp_path, values)


def test_agent_parser_agrees_with_the_chart_on_bad_config(tmp_path: Path) -> None:
    """What the chart refuses for the agent's sake, the agent would refuse too (exit 2)."""
    f = tmp_path / "config.yaml"
    f.write_text("colour: blue\nall: true\n")
    with pytest.raises(ConfigError, match="colour"):
        parse_run_args(["--config", str(f)], {})


# -- scraping ------------------------------------------------------------------------------------

def test_service_monitor_is_off_by_default(helm: str, tmp_path: Path) -> None:
    assert not [o for o in render(helm, tmp_path) if o["kind"] == "ServiceMonitor"]


def test_service_monitor_selects_the_agents_service(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, VARIANTS["service-monitor"])
    sm, svc = one(objects, "ServiceMonitor"), one(objects, "Service")
    jsonschema.validate(sm, SERVICE_MONITOR_SCHEMA)
    assert sm["metadata"]["labels"]["release"] == "kps"
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["clusterIP"] == "None"  # each pod scraped, not a random one
    pod_labels = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node",
         "action": "replace"},
        {"action": "labeldrop", "regex": "pod"}]
    annotations = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("prometheus.io/") for k in annotations)


def test_a_changed_config_rolls_the_pods(helm: str, tmp_path: Path) -> None:
    def checksum(values: dict) -> str:
        ds = one(render(helm, tmp_path, values), "DaemonSet")
        return ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert checksum({}) == checksum({}) != checksum({"config": {"log_level": "debug"}})


def test_image_defaults_to_the_agents_version(helm: str, tmp_path: Path) -> None:
    from pyhttp2probe import __version__
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    objects = render(helm, tmp_path)
    assert agent_container(objects)["image"] == f"pyhttp2probe:{__version__}"
    objects = render(helm, tmp_path, VARIANTS["extras"])
    extras = agent_container(objects)
    assert extras["image"] == "registry.example/obs/pyhttp2probe@sha256:" + "ab" * 32
    assert extras["args"] == ["run", "--config", CONFIG_PATH, "--log-level", "warning"]
    s = agent_settings(objects, tmp_path)  # flags > variables > the file
    assert (s.log_level, s.series_ttl, s.listen) == ("warning", 3600, "0.0.0.0:9500")


def test_the_config_map_wins_over_the_images_environment(helm: str, tmp_path: Path) -> None:
    """The image sets PYHTTP2PROBE_LISTEN; a variable would beat the config file."""
    image = image_environment()
    env = {e["name"]: e.get("value") for e in agent_container(render(helm, tmp_path))["env"]}
    for name in image:
        assert env.get(name) == "", f"the image's {name} would override the ConfigMap"


def notes(helm: str, tmp_path: Path, sets: list[str]) -> str:
    """NOTES.txt as `helm install` would print it (helm template leaves it out): rendered
    through a copy of the chart where it is a named template."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "notes" }}' + text + "{{- end }}")
    (chart / "templates" / "notes.yaml").write_text('notes: {{ include "notes" . | toJson }}')
    args = ["template", RELEASE, str(chart), "--namespace", "obs",
            "--show-only", "templates/notes.yaml"]
    for item in sets:
        args += ["--set", item]
    return yaml.safe_load(run_helm(helm, *args).stdout)["notes"]


def test_install_notes_name_what_the_user_must_do(helm: str, tmp_path: Path) -> None:
    text = notes(helm, tmp_path / "default", [])
    assert "rollout status daemonset/pyhttp2probe" in text
    assert "/var/lib/kubelet/seccomp/profiles/pyhttp2probe.json" in text
    assert "pod-security.kubernetes.io/enforce=privileged" in text
    assert "twice" not in text
    text = notes(helm, tmp_path / "rd", ["seccompProfile.type=RuntimeDefault",
                                          "serviceMonitor.enabled=true"])
    assert "RuntimeDefault" in text and "kubelet/seccomp" not in text
    assert "scrapeAnnotations.enabled=false" in text
    text = notes(helm, tmp_path / "priv", ["securityContext.privileged=true"])
    assert "seccomp" not in text


# -- the plain manifests -----------------------------------------------------------------------

def test_plain_manifests_are_the_chart_rendered_with_defaults(helm: str,
                                                              tmp_path: Path) -> None:
    fresh = tmp_path / "pyhttp2probe.yaml"
    done = subprocess.run(["bash", str(ROOT / "ci" / "render-manifests.sh"), str(fresh)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    committed = MANIFESTS.read_text()
    assert committed == fresh.read_text(), (
        f"{MANIFESTS.relative_to(ROOT)} is stale: run `bash ci/render-manifests.sh`")
    assert committed.startswith("# pyhttp2probe: the Helm chart")
    objects = [d for d in yaml.safe_load_all(committed) if d]
    assert objects == render(helm, tmp_path)
