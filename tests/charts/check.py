#!/usr/bin/env python3
"""Checks both Helm charts, the Grafana dashboard and the objects `playpod control` applies (run
through check.sh).

Every step prints `ok ...` or `FAIL ...`; the last line is `charts: N passed, M failed` and the
exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import re
import subprocess
import sys
import tempfile
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate import SchemaNotFoundError, ValidationError

# The oldest Kubernetes the charts and the control plane (k8s-openapi feature v1_33) support,
# and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
NAMESPACE = "playpod"
# The token `playpod control --dump-session-manifests` uses (shell/src/control/manifests.rs).
DUMP_TOKEN = "0123456789abcdef0123456789abcdef"
# Where the "full" scenario puts the Grafana dashboard's ConfigMap (Grafana's namespace).
DASHBOARD_NAMESPACE = "monitoring"
# Every metric name playpod exposes, as Prometheus stores them; tests/tests/prometheus.rs keeps
# this list equal to what a real Prometheus scraped from a running pod and the control plane.
METRIC_NAMES = "tests/charts/metric-names.txt"
# Custom resources kubernetes-validate has no schema for: checked structurally below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")}

RETRO = {
    "title": "NES (RetroArch)",
    "image": "registry.example.com/retroarch-nes@sha256:" + "ab" * 32,
    "command": ["/usr/local/bin/playpod-game-entrypoint"],
    "args": ["retroarch", "-L", "/cores/nestopia_libretro.so", "/roms/game.nes"],
    "env": {"PULSE_LATENCY_MSEC": "10", "RETROARCH_CONFIG": "/tmp/retroarch.cfg"},
    "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    "gpu": True,
}

# Nodes set aside for games: session pods select them, tolerate their taint and have a node
# affinity to them. The toleration is listed twice: each must reach the Pod once.
GAME_NODE_SELECTOR = {"example.com/pool": "games"}
GAME_NODE_TOLERATION = {"key": "example.com/pool", "operator": "Equal", "value": "games", "effect": "NoSchedule"}
GPU_TOLERATION = {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
GAME_NODE_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "example.com/pool", "operator": "In", "values": ["games"]}]}]}}}
GAME_NODES = {"nodeSelector": GAME_NODE_SELECTOR, "tolerations": [GAME_NODE_TOLERATION, GAME_NODE_TOLERATION],
              "affinity": GAME_NODE_AFFINITY}
# Backends allowed to call the control plane's API (networkPolicy.apiClients).
API_CLIENTS = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
     "podSelector": {"matchLabels": {"app.kubernetes.io/name": "shop-backend"}}},
    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "lobby"}}},
]
# Clients that are no pods (a LoadBalancer's, a NodePort's): an ipBlock peer.
API_CLIENT_ADDRESSES = {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}

# (chart, scenario, release name, values, run checkov on it)
SCENARIOS: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("playpod", "default", "playpod", {}, True),
    (
        "playpod",
        "full",
        "games",
        {
            "image": {"digest": "sha256:" + "cd" * 32},
            "apiToken": {"value": "a-fixed-api-token-for-tests-0123"},
            "imagePullSecrets": ["registry"],
            "ingress": {"enabled": True, "host": "control.example.com", "tlsSecretName": "control-tls"},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "dashboard": {"enabled": True, "namespace": DASHBOARD_NAMESPACE, "label": "example.com/dashboard",
                          "labelValue": "games", "folder": "Games"},
            "gpuTimeSlicing": {"enabled": True, "namespace": "nvidia-device-plugin", "replicas": 8},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "service": {"type": "LoadBalancer"},
            "networkPolicy": {"apiClients": [*API_CLIENTS, API_CLIENT_ADDRESSES]},
            "sessions": {
                "publicUrl": "https://play.example.com",
                "ingress": {"tlsSecretName": "play-tls"},
                "streamer": {"gpu": True, "extraArgs": ["--encoder", "nvenc", "--bitrate-kbps", "3000"]},
                "imagePullSecrets": ["registry"],
                **GAME_NODES,
                "priorityClassName": "games",
                "maxSessions": 50,
            },
            "games": [
                {
                    "name": "pong",
                    "title": "Pong",
                    "image": "ghcr.io/playpod/game-base:0.1.0",
                    "args": ["playpod", "game", "--display", ":0", "--scene", "pong"],
                },
                {"name": "nes", **RETRO},
            ],
        },
        True,
    ),
    (
        "playpod",
        "existing-secret-no-networkpolicy",
        "playpod",
        {"apiToken": {"existingSecret": "my-api-token"}, "networkPolicy": {"enabled": False},
         "dashboard": {"enabled": True},
         # Session URLs from publicUrl alone; sessions without a GPU on the game nodes; quantities
         # as plain numbers and with an exponent.
         "sessions": {"publicUrl": "https://play.example.com", "ingress": {"host": ""},
                      "tolerations": [GAME_NODE_TOLERATION]},
         "games": [{"name": "pong", "image": "ghcr.io/playpod/game-base:0.1.0", "args": ["pong"],
                    "resources": {"requests": {"cpu": 0.5, "memory": "256Mi"},
                                  "limits": {"cpu": 1, "memory": "1e9"}}}]},
        # Without NetworkPolicies checkov rightly flags the pods (CKV2_K8S_6): not a shipped default.
        False,
    ),
    ("playpod-session", "default", "pong-1", {"randomPath": DUMP_TOKEN}, True),
    (
        "playpod-session",
        "full",
        "nes-1",
        {
            "gameName": "nes",
            "randomPath": "Zx_9-" + "q" * 27,
            "games": {"nes": RETRO},
            "streamer": {"digest": "sha256:" + "ef" * 32, "gpu": True, "extraArgs": ["--encoder", "nvenc"]},
            "ingress": {"host": "play.example.com", "tlsSecretName": "play-tls"},
            "imagePullSecrets": ["registry"],
            **GAME_NODES,
            "priorityClassName": "games",
        },
        True,
    ),
    (
        "playpod-session",
        "numeric-game-name",
        "puzzle-1",
        # A game name of digits only must stay a string in the labels (quoted in the templates).
        {"gameName": "2048", "randomPath": DUMP_TOKEN,
         "games": {"2048": {"title": "2048", "image": "registry.example.com/2048:1.0", "args": ["2048"]}}},
        # The same objects as [default] but for the game: nothing new for checkov.
        False,
    ),
]

# Renders that must fail, and the pieces of the message that say why.
MUST_FAIL: list[tuple[str, dict[str, Any], str | list[str]]] = [
    ("playpod-session", {}, "randomPath is required"),
    ("playpod-session", {"randomPath": "short"}, "randomPath"),
    ("playpod-session", {"randomPath": "has/a/slash/in/it/0123"}, "randomPath"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "gameName": "tetris"}, "not in games"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "typo": 1}, "typo"),
    ("playpod", {"apiToken": {"value": "short"}}, "apiToken"),
    ("playpod", {"sessions": {"ttlMinutes": 0}}, "ttlMinutes"),
    ("playpod", {"sessions": {"typo": 1}}, "typo"),
    ("playpod", {"games": []}, "games"),
    ("playpod", {"games": [{"name": "Bad_Name", "image": "x"}]}, "name"),
    ("playpod", {"dashboard": {"typo": 1}}, "typo"),
    ("playpod", {"dashboard": {"enabled": True, "label": "not a label!"}}, "label"),
    ("playpod", {"dashboard": {"enabled": True, "namespace": "Not_A_Namespace"}}, "namespace"),
    # Kubernetes quantities, checked at install rather than on every POST /api/sessions.
    ("playpod", {"resources": {"limits": {"cpu": "-1"}}}, "/resources/limits/cpu"),
    ("playpod", {"sessions": {"streamer": {"resources": {"requests": {"memory": "lots"}}}}},
     "/sessions/streamer/resources/requests/memory"),
    ("playpod", {"games": [{"name": "pong", "image": "x", "resources": {"limits": {"cpu": -1}}}]},
     "/games/0/resources/limits/cpu"),
    ("playpod", {"games": [{"name": "pong", "image": "x", "resources": {"requests": {"memory": "1 Gi"}}}]},
     "/games/0/resources/requests/memory"),
    ("playpod", {"sessions": {"framebufferSizeLimit": "16MB"}}, "framebufferSizeLimit"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "streamer": {"resources": {"limits": {"cpu": "two"}}}},
     "/streamer/resources/limits/cpu"),
    ("playpod-session", {"randomPath": DUMP_TOKEN,
                         "games": {"pong": {"image": "x", "resources": {"requests": {"memory": "-256Mi"}}}}},
     "/games/pong/resources/requests/memory"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "defaultGameResources": {"limits": {"cpu": "1.5 cores"}}},
     "/defaultGameResources/limits/cpu"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "tmpSizeLimit": "lots"}, "tmpSizeLimit"),
    # No base for session URLs: the control plane would refuse to start (config.rs base_url).
    ("playpod", {"sessions": {"publicUrl": "", "ingress": {"host": ""}}},
     ["/sessions/publicUrl", "/sessions/ingress/host"]),
    ("playpod", {"sessions": {"ingress": {"host": " "}}}, ["/sessions/publicUrl", "/sessions/ingress/host"]),
    # Session scheduling, as the control plane parses it (k8s-openapi types).
    ("playpod", {"sessions": {"tolerations": [{"key": "x", "operator": "Sometimes"}]}}, "operator"),
    ("playpod", {"sessions": {"tolerations": [{"key": "x", "tolerationSeconds": "soon"}]}}, "tolerationSeconds"),
    ("playpod", {"sessions": {"affinity": {"nodeAfinity": {}}}}, "nodeAfinity"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "tolerations": {"key": "x"}}, "tolerations"),
    ("playpod-session", {"randomPath": DUMP_TOKEN, "affinity": []}, "affinity"),
    # API clients are NetworkPolicy peers: a selector of namespaces and/or pods.
    ("playpod", {"networkPolicy": {"apiClients": [{}]}}, "/networkPolicy/apiClients/0"),
    ("playpod", {"networkPolicy": {"apiClients": [{"podSelector": {"matchLabel": {"app": "x"}}}]}}, "matchLabel"),
    ("playpod", {"networkPolicy": {"apiClients": {"podSelector": {}}}}, "apiClients"),
    ("playpod", {"networkPolicy": {"apiClients": [{**API_CLIENT_ADDRESSES, "podSelector": {}}]}},
     "/networkPolicy/apiClients/0"),
    # What `playpod control` refuses at start (config.rs): the chart must refuse it too, or an
    # upgrade (strategy Recreate) replaces a working control plane with one that cannot start.
    ("playpod", {"games": [{"name": "pong", "image": "x"}, {"name": "pong", "image": "y"}]}, "listed twice"),
    ("playpod", {"games": [{"name": "pong", "image": " "}]}, "/games/0/image"),
    ("playpod", {"sessions": {"streamer": {"image": " "}}}, "/sessions/streamer/image"),
    ("playpod", {"sessions": {"maxSessions": 4294967296}}, "maxSessions"),
    ("playpod", {"sessions": {"idleMinutes": 4294967296}}, "idleMinutes"),
    ("playpod", {"sessions": {"startupGraceSeconds": 4294967296}}, "startupGraceSeconds"),
    ("playpod", {"sessions": {"startupGraceSeconds": 74}}, "startupGraceSeconds"),
]

# How each playpod scenario's dashboard ConfigMap must look: None (not rendered), or
# (namespace, label, label value, folder annotation or None).
DASHBOARD_EXPECTED: dict[str, tuple[str, str, str, str | None] | None] = {
    "default": None,
    "full": (DASHBOARD_NAMESPACE, "example.com/dashboard", "games", "Games"),
    "existing-secret-no-networkpolicy": (NAMESPACE, "grafana_dashboard", "1", None),
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"ok   {what}")

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"FAIL {what}: {why}")

    def check(self, condition: bool, what: str, why: str = "") -> bool:
        if condition:
            self.ok(what)
        else:
            self.fail(what, why or "condition not met")
        return condition


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(report: Report, root: pathlib.Path, chart: str, scenario: str, release: str,
           values: dict[str, Any]) -> list[dict[str, Any]] | None:
    what = f"render {chart} [{scenario}]"
    try:
        manifests = helm.Chart.load(root / "charts" / chart).render(
            values, name=release, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        report.fail(what, str(e))
        return None
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        try:
            docs.extend(docs_of(text))
        except yaml.YAMLError as e:
            report.fail(what, f"{path} is not YAML: {e}")
            return None
    report.ok(f"{what}: {len(docs)} objects")
    return docs


def lint(report: Report, root: pathlib.Path) -> None:
    for chart, values in [("playpod", {}), ("playpod-session", {"randomPath": DUMP_TOKEN})]:
        for kube_version in KUBERNETES_VERSIONS:
            result = helm.lint(root / "charts" / chart, values, strict=True, namespace=NAMESPACE,
                               kube_version=f"v{kube_version}")
            messages = result.get("messages") or []
            errors = result.get("errors") or []
            report.check(not messages and not errors, f"helm lint --strict {chart} (Kubernetes {kube_version})",
                         json.dumps(messages + errors))


def must_fail(report: Report, root: pathlib.Path) -> None:
    for chart, values, needles in MUST_FAIL:
        what = f"render {chart} with {json.dumps(values)} is refused"
        try:
            helm.Chart.load(root / "charts" / chart).render(values, name="x", namespace=NAMESPACE)
        except helm.HelmError as e:
            missing = [n for n in ([needles] if isinstance(needles, str) else needles) if n not in str(e)]
            report.check(not missing, what, f"the message lacks {missing!r}: {e}")
            continue
        report.fail(what, "it rendered")


def dump_sessions(report: Report, playpod: str, scenario: str, docs: list[dict[str, Any]],
                  work: pathlib.Path) -> list[dict[str, Any]]:
    """Feeds the rendered ConfigMap to `playpod control --dump-session-manifests`."""
    what = f"playpod control reads the [{scenario}] ConfigMap and dumps its session objects"
    config_maps = [d for d in docs if d["kind"] == "ConfigMap" and "catalog.json" in d.get("data", {})]
    if len(config_maps) != 1:
        report.fail(what, f"expected one catalog ConfigMap, found {len(config_maps)}")
        return []
    data = config_maps[0]["data"]
    base = work / f"dump-{scenario}"
    base.mkdir(parents=True)
    (base / "catalog.json").write_text(data["catalog.json"])
    (base / "session.json").write_text(data["session.json"])
    run = subprocess.run(
        [playpod, "control", "--catalog", str(base / "catalog.json"), "--session-config",
         str(base / "session.json"), "--namespace", NAMESPACE, "--dump-session-manifests",
         str(base / "out")],
        capture_output=True, text=True, check=False)
    if run.returncode != 0:
        report.fail(what, run.stderr.strip() or run.stdout.strip())
        return []
    files = [pathlib.Path(line) for line in run.stdout.split()]
    games = json.loads(data["catalog.json"])["games"]
    dumped: list[dict[str, Any]] = []
    for f in files:
        dumped.extend(docs_of(f.read_text()))
    report.check(len(files) == len(games) and len(dumped) == 3 * len(games), what,
                 f"{len(files)} files, {len(dumped)} objects for {len(games)} games")
    return dumped


def check_crd(report: Report, where: str, doc: dict[str, Any]) -> None:
    spec = doc.get("spec", {})
    endpoints = spec.get("endpoints") if doc["kind"] == "ServiceMonitor" else spec.get("podMetricsEndpoints")
    good = (
        bool(doc["metadata"].get("name"))
        and doc["metadata"].get("namespace") == NAMESPACE
        and bool(spec.get("selector", {}).get("matchLabels"))
        and isinstance(endpoints, list)
        and all(e.get("port") == "http" and e.get("path") == "/metrics" for e in endpoints)
    )
    report.check(good, f"{where}: {doc['kind']}/{doc['metadata'].get('name')} structure (custom resource)",
                 json.dumps(doc))


def validate(report: Report, where: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            check_crd(report, where, doc)
            continue
        for version in KUBERNETES_VERSIONS:
            what = f"{where}: {name} is a valid Kubernetes {version} object (strict)"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                report.fail(what, f"{path}: {e.message}")
            except SchemaNotFoundError as e:
                report.fail(what, f"no schema: {e}")
            else:
                report.ok(what)
        if doc.get("kind") not in ("ClusterRole", "ClusterRoleBinding"):
            meta = doc.get("metadata", {})
            report.check(meta.get("namespace") == NAMESPACE
                         or meta.get("name") == "playpod-time-slicing"
                         or (is_dashboard(doc) and meta.get("namespace") == DASHBOARD_NAMESPACE),
                         f"{where}: {name} names its namespace", json.dumps(doc.get("metadata")))


def is_dashboard(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == "ConfigMap" and "playpod.json" in (doc.get("data") or {})


def check_dashboard_object(report: Report, root: pathlib.Path, scenario: str, docs: list[dict[str, Any]]) -> None:
    """The dashboard ConfigMap: there when enabled, labelled for Grafana's sidecar, the file's JSON."""
    expected = DASHBOARD_EXPECTED[scenario]
    found = [d for d in docs if is_dashboard(d)]
    what = f"playpod [{scenario}]: dashboard ConfigMap"
    if expected is None:
        report.check(not found, f"{what} not rendered (dashboard.enabled false)", json.dumps(found)[:500])
        return
    if not report.check(len(found) == 1, f"{what} rendered once", f"found {len(found)}"):
        return
    cm = found[0]
    meta = cm["metadata"]
    namespace, label, value, folder = expected
    report.check(meta.get("namespace") == namespace, f"{what} in namespace {namespace}", json.dumps(meta))
    report.check((meta.get("labels") or {}).get(label) == value,
                 f"{what} labelled {label}={value!r} for the sidecar", json.dumps(meta.get("labels")))
    annotations = meta.get("annotations") or {}
    if folder is None:
        report.check("grafana_folder" not in annotations, f"{what} has no folder annotation", json.dumps(annotations))
    else:
        report.check(annotations.get("grafana_folder") == folder, f"{what} annotated grafana_folder={folder!r}",
                     json.dumps(annotations))
    text = cm["data"]["playpod.json"]
    try:
        embedded = json.loads(text)
    except json.JSONDecodeError as e:
        report.fail(f"{what}: embedded dashboard is JSON", str(e))
        return
    shipped = json.loads((root / "charts" / "playpod" / "dashboards" / "playpod.json").read_text())
    report.check(embedded == shipped, f"{what}: embedded JSON parses and equals dashboards/playpod.json")
    report.check(len(text.encode()) < 900 * 1024, f"{what}: {len(text.encode())} bytes, under the ConfigMap limit")


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"(?<![A-Za-z0-9_])playpod_[A-Za-z0-9_]+", expr))


def declared_in_sources(root: pathlib.Path, name: str) -> bool:
    """Whether the Rust metric code registers `name` (as Prometheus stores it) under its base name."""
    sources = {
        "playpod_control_": (root / "shell" / "src" / "control" / "metrics.rs").read_text(),
        "playpod_": (root / "shell" / "src" / "metrics.rs").read_text(),
    }
    for prefix, text in sources.items():
        if not name.startswith(prefix):
            continue
        base = name[len(prefix):]
        candidates = {base}
        for suffix in ("_total", "_bucket", "_sum", "_count", "_info"):
            if base.endswith(suffix):
                candidates.add(base[: -len(suffix)])
        candidates |= {c[: -len("_seconds")] for c in set(candidates) if c.endswith("_seconds")}
        if any(f'"{c}"' in text for c in candidates):
            return True
    return False


def check_dashboard(report: Report, root: pathlib.Path) -> None:
    """The dashboard itself: Grafana's format, the datasource variable everywhere, unique panel ids,
    and only metric names playpod exposes."""
    path = root / "charts" / "playpod" / "dashboards" / "playpod.json"
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        report.fail("dashboards/playpod.json is JSON", str(e))
        return
    report.ok("dashboards/playpod.json is JSON")
    report.check(isinstance(dash.get("schemaVersion"), int) and 36 <= dash["schemaVersion"] <= 41,
                 f"dashboard schemaVersion {dash.get('schemaVersion')} (Grafana 10/11)")
    report.check(bool(dash.get("uid")) and bool(dash.get("title")), "dashboard has a uid and a title")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    report.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
                 "dashboard variable `datasource` picks a Prometheus data source", json.dumps(ds))
    uses_variable = {"${datasource}", "$datasource"}

    def ds_ok(obj: dict[str, Any]) -> bool:
        d = obj.get("datasource")
        return isinstance(d, dict) and d.get("type") == "prometheus" and d.get("uid") in uses_variable

    panels: list[dict[str, Any]] = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))
    ids = [p.get("id") for p in panels]
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    report.check(all(isinstance(i, int) for i in ids) and not dup,
                 f"dashboard: {len(panels)} panels, each with a unique integer id", f"duplicates or missing: {dup}")
    exprs: list[tuple[str, str]] = []
    bad_ds: list[str] = []
    for p in panels:
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        if not ds_ok(p):
            bad_ds.append(f"panel {title!r}: {p.get('datasource')}")
        targets = p.get("targets") or []
        if not targets:
            bad_ds.append(f"panel {title!r} has no query")
        for t in targets:
            if not ds_ok(t):
                bad_ds.append(f"panel {title!r} target {t.get('refId')}: {t.get('datasource')}")
            if not (t.get("expr") or "").strip():
                bad_ds.append(f"panel {title!r} target {t.get('refId')}: empty expr")
            else:
                exprs.append((title, t["expr"]))
    for name, v in variables.items():
        if v.get("type") == "query":
            if not ds_ok(v):
                bad_ds.append(f"variable {name}: {v.get('datasource')}")
            exprs.append((f"variable {name}", v.get("definition") or ""))
    report.check(not bad_ds, f"dashboard: every panel, query and query variable uses the ${{datasource}} variable "
                 f"({len(exprs)} expressions)", "\n  " + "\n  ".join(bad_ds))

    names_file = root / METRIC_NAMES
    exposed = {line.strip() for line in names_file.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    undeclared = sorted(n for n in exposed if not declared_in_sources(root, n))
    report.check(bool(exposed) and not undeclared,
                 f"{METRIC_NAMES}: {len(exposed)} names, each registered in shell/src/metrics.rs or "
                 "shell/src/control/metrics.rs", f"not found in the sources: {undeclared}")
    used: set[str] = set()
    unknown: list[str] = []
    for where, expr in exprs:
        names = metric_names_in(expr)
        if not names:
            unknown.append(f"{where}: no playpod metric in {expr!r}")
        used |= names
        unknown.extend(f"{where}: {n}" for n in sorted(names - exposed))
    report.check(not unknown, f"dashboard: its {len(used)} metric names are all ones playpod exposes ({METRIC_NAMES})",
                 "\n  " + "\n  ".join(unknown))
    # Every family of the control plane, and the pod's headline series, are on the dashboard.
    def family(n: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", n)
    control = {family(n) for n in exposed if n.startswith("playpod_control_")}
    missing = sorted(control - {family(n) for n in used})
    report.check(not missing, f"dashboard: shows all {len(control)} control-plane metric families",
                 f"missing: {missing}")
    headline = {
        "playpod_frames_encoded_total", "playpod_frames_dropped_total", "playpod_frame_ready_to_ring_seconds_bucket",
        "playpod_encode_seconds_bucket", "playpod_convert_seconds_bucket", "playpod_video_bytes_sent_total",
        "playpod_encoded_bytes_total", "playpod_viewers", "playpod_players", "playpod_keyframe_requests_total",
        "playpod_viewer_lags_total", "playpod_input_messages_total", "playpod_input_errors_total",
        "playpod_input_latency_seconds_bucket", "playpod_audio_state", "playpod_audio_packets_total",
        "playpod_audio_pcm_underruns_total", "playpod_audio_pcm_overruns_total", "playpod_build_info",
    }
    missing = sorted(headline - used)
    report.check(not missing, f"dashboard: shows the {len(headline)} headline series of the game pods",
                 f"missing: {missing}")


def same_session_objects(report: Report, chart_docs: list[dict[str, Any]],
                         dumped: list[dict[str, Any]]) -> None:
    """The session chart and the control plane must make the same pod for the same game."""
    def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        found = [d for d in docs if d["kind"] == kind]
        assert len(found) >= 1, kind
        return found[0]

    pong = [d for d in dumped if d["metadata"]["labels"].get("playpod.io/game") == "pong"]
    chart_pod, dumped_pod = one(chart_docs, "Pod"), one(pong, "Pod")
    report.check(chart_pod["spec"] == dumped_pod["spec"],
                 "playpod-session's Pod spec equals the control plane's (pong, same token)",
                 diff(chart_pod["spec"], dumped_pod["spec"]))
    chart_ing, dumped_ing = one(chart_docs, "Ingress"), one(pong, "Ingress")
    report.check(chart_ing["metadata"].get("annotations") == dumped_ing["metadata"].get("annotations")
                 and chart_ing["spec"]["rules"][0]["http"]["paths"][0]["path"]
                 == dumped_ing["spec"]["rules"][0]["http"]["paths"][0]["path"]
                 == f"/play/{DUMP_TOKEN}/",
                 "playpod-session's Ingress routes like the control plane's",
                 diff(chart_ing, dumped_ing))
    chart_svc, dumped_svc = one(chart_docs, "Service"), one(pong, "Service")
    report.check(chart_svc["spec"]["ports"] == dumped_svc["spec"]["ports"],
                 "playpod-session's Service ports equal the control plane's",
                 diff(chart_svc["spec"], dumped_svc["spec"]))


def diff(a: Any, b: Any) -> str:
    import difflib
    left = yaml.safe_dump(a, sort_keys=True).splitlines()
    right = yaml.safe_dump(b, sort_keys=True).splitlines()
    return "\n" + "\n".join(difflib.unified_diff(left, right, "chart", "control plane", lineterm=""))


def checkov(report: Report, venv_bin: pathlib.Path, label: str, args: list[str]) -> None:
    what = f"checkov {label}"
    run = subprocess.run([str(venv_bin / "checkov"), *args, "--output", "json", "--quiet", "--compact",
                          "--skip-download"],
                         capture_output=True, text=True, check=False)
    try:
        parsed = json.loads(run.stdout)
    except json.JSONDecodeError:
        report.fail(what, f"exit {run.returncode}, no JSON: {run.stdout[-2000:]} {run.stderr[-2000:]}")
        return
    results = parsed if isinstance(parsed, list) else [parsed]
    passed = failed = skipped = 0
    failures: list[str] = []
    for r in results:
        summary = r.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0)
        skipped += summary.get("skipped", 0)
        for c in r.get("results", {}).get("failed_checks", []):
            failures.append(f"{c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path']})")
        for c in r.get("results", {}).get("skipped_checks", []):
            reason = (c.get("check_result") or {}).get("suppress_comment") or ""
            if not reason.strip():
                failures.append(f"{c['check_id']} skipped without a reason on {c['resource']}")
    if passed == 0 and failed == 0:
        report.fail(what, f"checked nothing (exit {run.returncode}): {run.stderr[-2000:]}")
        return
    report.check(not failures and failed == 0,
                 f"{what}: {passed} passed, {failed} failed, {skipped} skipped"
                 f"{' (each with its reason)' if skipped else ''}",
                 "\n  " + "\n  ".join(failures))


def streamers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(`Pod/name (game)`, the Pod, its streamer container) of every session Pod in `docs`."""
    return [(f"Pod/{d['metadata']['name']} ({d['metadata']['labels'].get('playpod.io/game')})", d, c)
            for d in docs if d["kind"] == "Pod" for c in d["spec"]["containers"] if c["name"] == "streamer"]


def streamer_gpu(report: Report, where: str, docs: list[dict[str, Any]], want: bool) -> None:
    """`streamer.gpu` (`sessions.streamer.gpu` of the control plane) gives the streamer (which
    converts and encodes) a GPU, NVENC's libraries and the GPU nodes' toleration."""
    found = streamers(docs)
    if not found:
        report.fail(f"{where}: streamer GPU", "no session Pod")
    for name, pod, streamer in found:
        resources = streamer.get("resources", {})
        has_gpu = all(resources.get(k, {}).get("nvidia.com/gpu") == "1" for k in ("limits", "requests"))
        caps = {e["name"]: e.get("value") for e in streamer.get("env", [])}.get("NVIDIA_DRIVER_CAPABILITIES")
        tolerated = any(t.get("key") == "nvidia.com/gpu" for t in pod["spec"].get("tolerations", []))
        report.check(has_gpu == want and (caps == "compute,video,utility") == want and (tolerated or not want),
                     f"{where}: {name} streamer GPU {'requested' if want else 'not requested'}",
                     f"resources={resources} NVIDIA_DRIVER_CAPABILITIES={caps} tolerated={tolerated}")


def streamer_startup(report: Report, where: str, docs: list[dict[str, Any]]) -> None:
    """The streamer answers nothing until the game's display is up: its startup probe must allow the
    whole --wait-for-display (and a margin) before the kubelet restarts it."""
    for name, _, streamer in streamers(docs):
        args = streamer.get("args", [])
        wait = int(args[args.index("--wait-for-display") + 1]) if "--wait-for-display" in args else None
        probe = streamer.get("startupProbe") or {}
        allowed = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        report.check(wait is not None and probe.get("httpGet", {}).get("path") == "/healthz"
                     and allowed >= wait + 10,
                     f"{where}: {name} streamer startupProbe allows the {wait} s display wait",
                     f"startupProbe={probe} ({allowed} s)")


def labels_are_strings(report: Report, where: str, docs: list[dict[str, Any]]) -> None:
    """Every label value is a string (an unquoted `2048` in a template would be a number)."""
    bad = [f"{d['kind']}/{d['metadata'].get('name')}: {k}={v!r}" for d in docs
           for k, v in (d["metadata"].get("labels") or {}).items() if not isinstance(v, str)]
    report.check(not bad, f"{where}: every label value is a string", "; ".join(bad))


def session_scheduling(report: Report, where: str, docs: list[dict[str, Any]], node_selector: dict[str, str] | None,
                       tolerations: list[dict[str, Any]] | None, affinity: dict[str, Any] | None) -> None:
    """Every session Pod carries the configured node selector, tolerations (each once, the GPU
    nodes' one after the configured ones where the session has a GPU) and affinity."""
    pods = [d for d in docs if d["kind"] == "Pod"]
    if not pods:
        report.fail(f"{where}: session scheduling", "no session Pod")
    for pod in pods:
        spec = pod["spec"]
        got = (spec.get("nodeSelector"), spec.get("tolerations"), spec.get("affinity"))
        report.check(got == (node_selector, tolerations, affinity),
                     f"{where}: Pod/{pod['metadata']['name']} has the configured nodeSelector, "
                     f"{len(tolerations or [])} toleration(s) and {'an' if affinity else 'no'} affinity",
                     diff({"nodeSelector": node_selector, "tolerations": tolerations, "affinity": affinity},
                          dict(zip(("nodeSelector", "tolerations", "affinity"), got))))


def api_clients(report: Report, scenario: str, docs: list[dict[str, Any]], name: str,
                extra: list[dict[str, Any]]) -> None:
    """The control plane's NetworkPolicy admits to the API port the ingress controller's and the
    monitoring namespaces, and exactly the peers of networkPolicy.apiClients."""
    what = f"playpod [{scenario}]: the API's NetworkPolicy admits {2 + len(extra)} peers"
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name]
    if len(policies) != 1:
        report.fail(what, f"found {len(policies)} control-plane NetworkPolicies")
        return
    rules = policies[0]["spec"].get("ingress") or []
    peers = rules[0].get("from") if len(rules) == 1 else None
    expected = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        *extra,
    ]
    report.check(peers == expected and rules[0].get("ports") == [{"port": 8090, "protocol": "TCP"}], what,
                 diff(expected, rules))


def retry_policy(root: pathlib.Path) -> tuple[int, float, int, int]:
    """(attempts, backoff in seconds, timeout in seconds, list timeout factor) of the control
    plane's Kubernetes API calls (shell/src/control/plane.rs, RetryPolicy::default)."""
    text = (root / "shell" / "src" / "control" / "plane.rs").read_text()

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        assert found, f"plane.rs has no {pattern!r}"
        return int(found.group(1))
    return (number(r"attempts: (\d+),"), number(r"backoff: Duration::from_millis\((\d+)\)") / 1000,
            number(r"timeout: Duration::from_secs\((\d+)\)"), number(r"LIST_TIMEOUT_FACTOR: u32 = (\d+);"))


def control_plane_lifecycle(report: Report, root: pathlib.Path, scenario: str, docs: list[dict[str, Any]]) -> None:
    """The control plane opens its port only once it has listed the session pods (each attempt of
    that list may take LIST_TIMEOUT_FACTOR times the call timeout): the kubelet must not kill it
    while it waits. On SIGTERM it finishes the creations in flight (three calls, each up to the
    call timeout) before it exits: the kubelet must not kill it half-way either."""
    attempts, backoff, timeout, factor = retry_policy(root)
    rebuild = attempts * timeout * factor + backoff * sum(range(attempts))
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        control = next(c for c in spec["containers"] if c["name"] == "control")
        probe = control.get("startupProbe") or control.get("livenessProbe") or {}
        allowed = (probe.get("initialDelaySeconds", 0)
                   + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))
        report.check(allowed >= rebuild + 10,
                     f"playpod [{scenario}]: the control plane's probes allow its start-up list of sessions "
                     f"({rebuild:g} s at most)",
                     f"{'startupProbe' if 'startupProbe' in control else 'livenessProbe'}={probe} "
                     f"kills it after {allowed} s")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        report.check(grace >= 3 * timeout + 10,
                     f"playpod [{scenario}]: terminationGracePeriodSeconds {grace} lets a creation in flight "
                     f"finish (3 calls of up to {timeout} s)",
                     f"{grace} s < {3 * timeout + 10} s")


# Where the control plane reads its API token (charts/playpod/templates/deployment.yaml).
API_TOKEN_DIR = "/var/run/secrets/playpod"


def api_token_file(report: Report, scenario: str, docs: list[dict[str, Any]], secret: str) -> None:
    """The control plane reads its API token from the Secret mounted as a volume
    (`--api-token-file`), which the kubelet updates in place when the Secret changes: the whole
    volume mounted (a subPath would never be updated), read-only, the file readable by the
    control plane's user (group fsGroup) and no one else; the token is in no environment variable."""
    what = f"playpod [{scenario}]: the API token is the file {API_TOKEN_DIR}/token of Secret {secret}"
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        report.fail(what, f"found {len(deployments)} Deployments")
        return
    spec = deployments[0]["spec"]["template"]["spec"]
    control = next(c for c in spec["containers"] if c["name"] == "control")
    args = control.get("args", [])
    flag = (args[args.index("--api-token-file") + 1] if "--api-token-file" in args[:-1] else None)
    report.check(flag == f"{API_TOKEN_DIR}/token" and "--api-token" not in args,
                 f"{what}: passed as --api-token-file", json.dumps(args))
    env = control.get("env") or []
    secret_env = [e["name"] for e in env if "secretKeyRef" in (e.get("valueFrom") or {})
                  or e["name"].startswith("PLAYPOD_API_TOKEN")]
    report.check(not secret_env and not control.get("envFrom"),
                 f"{what}: no token in the environment", json.dumps(env))
    mounts = [m for m in control.get("volumeMounts", []) if m.get("mountPath") == API_TOKEN_DIR]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    volume = volumes.get(mounts[0]["name"], {}) if len(mounts) == 1 else {}
    source = volume.get("secret") or {}
    report.check(len(mounts) == 1 and mounts[0].get("readOnly") is True and "subPath" not in mounts[0]
                 and "subPathExpr" not in mounts[0],
                 f"{what}: the whole volume mounted read-only (no subPath: the kubelet updates it)",
                 json.dumps(mounts))
    report.check(source.get("secretName") == secret and source.get("items") == [{"key": "token", "path": "token"}]
                 and not source.get("optional"),
                 f"{what}: the volume holds the Secret's key `token` as `token`", json.dumps(volume))
    mode = source.get("defaultMode")
    security = spec.get("securityContext") or {}
    user = control.get("securityContext", {}).get("runAsUser", security.get("runAsUser"))
    report.check(mode == 0o440 and security.get("fsGroup") is not None and user not in (None, 0),
                 f"{what}: mode 0440, readable through fsGroup by the non-root user",
                 f"defaultMode={mode!r} fsGroup={security.get('fsGroup')!r} runAsUser={user!r}")
    annotations = deployments[0]["spec"]["template"]["metadata"].get("annotations") or {}
    report.check("checksum/api-token" not in annotations,
                 f"playpod [{scenario}]: no checksum of the token on the pod (a rotation restarts nothing)",
                 json.dumps(annotations))
    owned = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == secret]
    report.check(len(owned) == (0 if scenario.startswith("existing-secret") else 1)
                 and all("token" in (d.get("data") or {}) for d in owned),
                 f"playpod [{scenario}]: Secret {secret} {'is not' if not owned else 'is'} made by the chart"
                 f"{', with its key `token`' if owned else ''}",
                 json.dumps([d["metadata"] for d in owned]))


def control_flags_exist(report: Report, playpod: str, scenario: str, docs: list[dict[str, Any]]) -> None:
    """Every flag the Deployment passes to `playpod control` is one the binary has."""
    what = f"playpod [{scenario}]: every flag of the control container is in `playpod control --help`"
    run = subprocess.run([playpod, "control", "--help"], capture_output=True, text=True, check=False)
    known = set(re.findall(r"--[a-z][a-z0-9-]*", run.stdout))
    control = next(c for d in docs if d["kind"] == "Deployment"
                   for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "control")
    flags = [a for a in control.get("args", []) if a.startswith("--")]
    unknown = [f for f in flags if f not in known]
    report.check(run.returncode == 0 and bool(flags) and not unknown, f"{what} ({len(flags)} flags)",
                 f"exit {run.returncode}, unknown: {unknown} {run.stderr[-500:]}")


def token_change_restarts_nothing(report: Report, root: pathlib.Path) -> None:
    """The control plane reads the API token again when its mounted Secret changes: a new token
    changes the Secret only, not the Deployment's pod template (which would roll the pod)."""
    def render_token(token: str) -> tuple[Any, Any]:
        manifests = helm.Chart.load(root / "charts" / "playpod").render(
            {"apiToken": {"value": token}}, name="playpod", namespace=NAMESPACE, is_install=True)
        docs = [d for path, text in manifests.items() if not path.endswith("NOTES.txt") for d in docs_of(text)]
        template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
        secret = next(d for d in docs if d["kind"] == "Secret")["data"]
        return template, secret
    (first, secret_one), (other, secret_two) = render_token("token-one-0123456789"), render_token("token-two-0123456789")
    report.check(first == other and secret_one != secret_two,
                 "playpod: a new apiToken.value changes the Secret, not the pod template (no restart)",
                 f"same template: {first == other}; new Secret data: {secret_one != secret_two}")


def release_names(report: Report, root: pathlib.Path) -> None:
    """A release name that cannot name a Service (DNS-1035: a letter first, no dots) is refused
    with the reason, rather than rendering objects the API server rejects."""
    for chart, values in [("playpod", {}), ("playpod-session", {"randomPath": DUMP_TOKEN})]:
        for name, good in [("pong-1", True), ("1st-game", False), ("pong.one", False)]:
            what = f"{chart}: release name {name!r} {'renders' if good else 'is refused'}"
            try:
                helm.Chart.load(root / "charts" / chart).render(values, name=name, namespace=NAMESPACE,
                                                                 is_install=True)
            except helm.HelmError as e:
                report.check(not good and "must start with a letter" in str(e), what, str(e))
                continue
            report.check(good, what, "it rendered")


def notes(root: pathlib.Path, chart: str, release: str, values: dict[str, Any]) -> str:
    manifests = helm.Chart.load(root / "charts" / chart).render(values, name=release, namespace=NAMESPACE,
                                                                 is_install=True)
    return next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")


def notes_name_api_clients(report: Report, root: pathlib.Path) -> None:
    """The install notes say who reaches the API in the cluster, and how to let a backend in."""
    for values, needle in [
        ({}, "list the backends that call it (their namespaces or pods) in networkPolicy.apiClients"),
        ({"networkPolicy": {"apiClients": API_CLIENTS}}, "and the 2 peer(s) of networkPolicy.apiClients"),
    ]:
        text = notes(root, "playpod", "playpod", copy.deepcopy(values))
        report.check(needle in text and "http://playpod.playpod.svc:8090/api/sessions" in text,
                     f"playpod NOTES.txt with {json.dumps(values)}: the in-cluster API address and {needle!r}", text)
    text = notes(root, "playpod", "playpod", {"networkPolicy": {"enabled": False}})
    report.check("NetworkPolicy" not in text, "playpod NOTES.txt without NetworkPolicies names none", text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=pathlib.Path, required=True)
    parser.add_argument("--playpod", required=True, help="the playpod binary")
    parser.add_argument("--keep", type=pathlib.Path, help="write the rendered objects here and keep them")
    args = parser.parse_args()
    root: pathlib.Path = args.root
    venv_bin = pathlib.Path(sys.executable).parent
    report = Report()

    lint(report, root)
    must_fail(report, root)
    release_names(report, root)

    with tempfile.TemporaryDirectory(prefix="playpod-charts-") as tmp:
        work = args.keep or pathlib.Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rendered: dict[tuple[str, str], list[dict[str, Any]]] = {}
        dumps: dict[str, list[dict[str, Any]]] = {}
        for chart, scenario, release, values, _ in SCENARIOS:
            docs = render(report, root, chart, scenario, release, copy.deepcopy(values))
            if docs is None:
                continue
            rendered[(chart, scenario)] = docs
            validate(report, f"{chart} [{scenario}]", docs)
            if chart == "playpod":
                dumps[scenario] = dump_sessions(report, args.playpod, scenario, docs, work)
                validate(report, f"control-plane sessions [{scenario}]", dumps[scenario])

        check_dashboard(report, root)
        for scenario in DASHBOARD_EXPECTED:
            if ("playpod", scenario) in rendered:
                check_dashboard_object(report, root, scenario, rendered[("playpod", scenario)])

        for scenario, want_gpu in (("default", False), ("full", True)):
            if ("playpod-session", scenario) in rendered:
                streamer_gpu(report, f"playpod-session [{scenario}]", rendered[("playpod-session", scenario)],
                             want_gpu)
            if dumps.get(scenario):
                streamer_gpu(report, f"control-plane sessions [{scenario}]", dumps[scenario], want_gpu)
        for (chart, scenario), docs in rendered.items():
            labels_are_strings(report, f"{chart} [{scenario}]", docs)
            if chart == "playpod-session":
                streamer_startup(report, f"playpod-session [{scenario}]", docs)
        for scenario, docs in dumps.items():
            streamer_startup(report, f"control-plane sessions [{scenario}]", docs)
        numeric = rendered.get(("playpod-session", "numeric-game-name"), [])
        report.check(bool(numeric) and all(d["metadata"]["labels"].get("playpod.io/game") == "2048" for d in numeric),
                     "playpod-session [numeric-game-name]: labelled playpod.io/game=\"2048\" (a string)",
                     json.dumps([d["metadata"].get("labels") for d in numeric]))

        # Where session pods run: the same in both charts, on the game nodes where configured.
        for where, docs, tolerations, selector, affinity in [
            ("playpod-session [default]", rendered.get(("playpod-session", "default")), None, None, None),
            ("control-plane sessions [default]", dumps.get("default"), None, None, None),
            ("playpod-session [full]", rendered.get(("playpod-session", "full")),
             [GAME_NODE_TOLERATION, GPU_TOLERATION], GAME_NODE_SELECTOR, GAME_NODE_AFFINITY),
            ("control-plane sessions [full]", dumps.get("full"),
             [GAME_NODE_TOLERATION, GPU_TOLERATION], GAME_NODE_SELECTOR, GAME_NODE_AFFINITY),
            ("control-plane sessions [existing-secret-no-networkpolicy]",
             dumps.get("existing-secret-no-networkpolicy"), [GAME_NODE_TOLERATION], None, None),
        ]:
            session_scheduling(report, where, docs or [], selector, tolerations, affinity)
        if ("playpod", "default") in rendered:
            api_clients(report, "default", rendered[("playpod", "default")], "playpod", [])
        if ("playpod", "full") in rendered:
            api_clients(report, "full", rendered[("playpod", "full")], "games-playpod",
                        [*API_CLIENTS, API_CLIENT_ADDRESSES])
        notes_name_api_clients(report, root)
        for scenario in ("default", "full"):
            if ("playpod", scenario) in rendered:
                control_plane_lifecycle(report, root, scenario, rendered[("playpod", scenario)])
        token_change_restarts_nothing(report, root)
        for scenario, secret in (("default", "playpod-api"), ("full", "games-playpod-api"),
                                 ("existing-secret-no-networkpolicy", "my-api-token")):
            if ("playpod", scenario) in rendered:
                api_token_file(report, scenario, rendered[("playpod", scenario)], secret)
                control_flags_exist(report, args.playpod, scenario, rendered[("playpod", scenario)])

        if ("playpod-session", "default") in rendered and dumps.get("default"):
            same_session_objects(report, rendered[("playpod-session", "default")], dumps["default"])

        for chart, scenario, _, _, scan in SCENARIOS:
            if not scan or (chart, scenario) not in rendered:
                continue
            out = work / "checkov" / f"{chart}-{scenario}"
            out.mkdir(parents=True, exist_ok=True)
            docs = rendered[(chart, scenario)] + (dumps.get(scenario, []) if chart == "playpod" else [])
            for i, doc in enumerate(docs):
                (out / f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml").write_text(
                    yaml.safe_dump(doc, sort_keys=False))
            checkov(report, venv_bin, f"{chart} [{scenario}]{' + its sessions' if chart == 'playpod' else ''}",
                    ["--directory", str(out), "--framework", "kubernetes"])

    dockerfiles = sorted((root / "charts" / "images").glob("*.Dockerfile"))
    if report.check(len(dockerfiles) >= 2, "charts/images has the streamer and game-base Dockerfiles",
                    str(dockerfiles)):
        files: list[str] = []
        for f in dockerfiles:
            files += ["--file", str(f)]
        checkov(report, venv_bin, "Dockerfiles", [*files, "--framework", "dockerfile"])

    print(f"charts: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
