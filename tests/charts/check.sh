#!/usr/bin/env bash
# Validates both Helm charts and the objects `playpod control` applies, with real engines:
#   - the Helm v4 engine (PyPI helm-python-sdk): `lint` (strict) and `render` of several value sets,
#     plus renders that must fail (missing randomPath, bad token, unknown game, unknown values,
#     malformed resource quantities, no base for session URLs, malformed tolerations, affinity or
#     API clients, what `playpod control` refuses at start);
#   - the control plane's Deployment: its probes allow the start-up list of sessions, its grace
#     period a creation in flight; it reads the API token from its Secret mounted as a volume
#     (--api-token-file, the whole volume, read-only, readable by its user only), so a new token
#     changes the Secret and rolls no pod;
#   - where session pods run (nodeSelector, tolerations merged with the GPU one, affinity), the same
#     from both charts; the API's NetworkPolicy peers (networkPolicy.apiClients) and install notes;
#   - the session objects the control plane builds, dumped by
#     `playpod control --dump-session-manifests` from each rendered ConfigMap's catalog and config;
#   - kubernetes-validate: every object, strictly, against Kubernetes 1.33 (the oldest the charts and
#     the k8s-openapi feature support) and 1.37 (the newest the tool knows);
#   - the session chart's Pod spec equals the control plane's for the same game and token;
#   - the Grafana dashboard (charts/playpod/dashboards/playpod.json): its ConfigMap renders when
#     enabled, labelled for Grafana's sidecar, with the file's JSON; the JSON has the datasource
#     variable in every panel and query, unique panel ids, and uses only metric names playpod
#     exposes (tests/charts/metric-names.txt, kept true by tests/tests/prometheus.rs against a
#     real Prometheus);
#   - checkov (kubernetes framework) on all rendered objects and (dockerfile framework) on
#     charts/images/*.Dockerfile: no failed check; every skip is justified in the chart or code.
#
# Needs: python3 with venv and pip; network to PyPI on the first run (the tools go into .venv at
# the repository root and are reused; reinstalled when tests/charts/requirements.txt changes);
# cargo, to build the playpod binary (or set PLAYPOD_BIN to a built one).
# Idempotent; exits non-zero on any failure. Usage: tests/charts/check.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$root/.venv"
requirements="$root/tests/charts/requirements.txt"
stamp="$venv/.playpod-charts-requirements"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi

bin=${PLAYPOD_BIN:-}
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --quiet -p playpod --bin playpod)
    bin="$root/target/debug/playpod"
fi

exec "$venv/bin/python" "$root/tests/charts/check.py" --root "$root" --playpod "$bin" "$@"
