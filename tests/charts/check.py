#!/usr/bin/env python3
"""Checks both Helm charts and the objects `playpod control` applies (run through check.sh).

Every step prints `ok ...` or `FAIL ...`; the last line is `charts: N passed, M failed` and the
exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
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
            "gpuTimeSlicing": {"enabled": True, "namespace": "nvidia-device-plugin", "replicas": 8},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "sessions": {
                "publicUrl": "https://play.example.com",
                "ingress": {"tlsSecretName": "play-tls"},
                "streamer": {"extraArgs": ["--bitrate-kbps", "3000"]},
                "imagePullSecrets": ["registry"],
                "nodeSelector": {"kubernetes.io/os": "linux"},
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
        {"apiToken": {"existingSecret": "my-api-token"}, "networkPolicy": {"enabled": False}},
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
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "priorityClassName": "games",
        },
        True,
    ),
]

# Renders that must fail, and a piece of the message that says why.
MUST_FAIL: list[tuple[str, dict[str, Any], str]] = [
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
]


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
    for chart, values, needle in MUST_FAIL:
        what = f"render {chart} with {json.dumps(values)} is refused"
        try:
            helm.Chart.load(root / "charts" / chart).render(values, name="x", namespace=NAMESPACE)
        except helm.HelmError as e:
            report.check(needle in str(e), what, f"the message lacks {needle!r}: {e}")
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
            report.check(doc.get("metadata", {}).get("namespace") == NAMESPACE
                         or doc.get("metadata", {}).get("name") == "playpod-time-slicing",
                         f"{where}: {name} names its namespace", json.dumps(doc.get("metadata")))


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


def streamer_gpu(report: Report, scenario: str, docs: list[dict[str, Any]], want: bool) -> None:
    """`streamer.gpu` gives the streamer (which converts and encodes) a GPU and NVENC's libraries."""
    pod = next(d for d in docs if d["kind"] == "Pod")
    streamer = next(c for c in pod["spec"]["containers"] if c["name"] == "streamer")
    resources = streamer.get("resources", {})
    has_gpu = all(resources.get(k, {}).get("nvidia.com/gpu") == "1" for k in ("limits", "requests"))
    caps = {e["name"]: e.get("value") for e in streamer.get("env", [])}.get("NVIDIA_DRIVER_CAPABILITIES")
    report.check(has_gpu == want and (caps == "compute,video,utility") == want,
                 f"playpod-session [{scenario}]: streamer GPU {'requested' if want else 'not requested'}",
                 f"resources={resources} NVIDIA_DRIVER_CAPABILITIES={caps}")


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

        for scenario, want_gpu in (("default", False), ("full", True)):
            if ("playpod-session", scenario) in rendered:
                streamer_gpu(report, scenario, rendered[("playpod-session", scenario)], want_gpu)

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
