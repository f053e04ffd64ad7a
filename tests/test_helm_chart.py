"""The Helm chart deploy/helm/slmctl and the plain manifests deploy/k8s made from it.

The chart is rendered offline with the Helm v4 library bundled by ``helm-python-sdk`` (no cluster, no
network) for each values set users start from: the defaults, values-cpu.yaml, values-gpu.yaml, and
autoscaling on (an HPA, or a KEDA ScaledObject) with a ServiceMonitor. Every object of a core kind is
validated strictly (unknown fields rejected) against the Kubernetes 1.37 schemas that
``kubernetes-validate`` ships; the two custom resources (ServiceMonitor, ScaledObject) are not in those
schemas, and no CRD schema is vendored here, so they are checked against the small schemas below, which
hold the fields the chart writes and the ones their CRDs require. Then the invariants the deployment
relies on: probes on real routes and the served port, no postStart hook, a read-only model volume
and ``--read-only-store`` in the replicas, the pull Job as the store's only writer, replicas and the
PodDisruptionBudget, resources and a locked-down security context everywhere. A real ``slmctl serve``,
started with the arguments the chart renders, answers every probe path with 200 without an API key.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import jsonschema
import kubernetes_validate.utils as kubernetes_validate
import pytest
import yaml

from serve_fixtures import Served, clean_env

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "slmctl"
K8S = ROOT / "deploy" / "k8s"
#: The Kubernetes version the objects are validated against (kubernetes-validate ships its schemas).
KUBE_VERSION = "1.37.0"
RELEASE, NAMESPACE = "slmctl", "slm"
PORT = 11434

Doc = dict[str, Any]


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / name).read_text(encoding="utf-8"))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of two values files (maps merge, anything else is replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


AUTOSCALING_HPA = {"autoscaling": {"enabled": True, "mode": "hpa"}, "serviceMonitor": {"enabled": True}}
AUTOSCALING_KEDA = {"autoscaling": {"enabled": True, "mode": "keda"}, "serviceMonitor": {"enabled": True}}
#: The values sets under test: what the chart ships, and autoscaling on (both ways) with a ServiceMonitor.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "cpu": load_values("values-cpu.yaml"),
    "gpu": load_values("values-gpu.yaml"),
    "autoscaling-hpa": AUTOSCALING_HPA,
    "autoscaling-keda": AUTOSCALING_KEDA,
    "cpu-autoscaling-hpa": merge(load_values("values-cpu.yaml"), AUTOSCALING_HPA),
    "gpu-autoscaling-keda": merge(load_values("values-gpu.yaml"), AUTOSCALING_KEDA),
    "emptydir-noauth-config": {"persistence": {"mode": "emptyDir", "size": "20Gi"}, "auth": {"enabled": False},
                               "config": {"keep_alive": "1h", "queue": 64},
                               "models": ["phi4:mini", "nomic-embed-text"]},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> list[Doc]:
    """Every object the chart renders with ``values`` (over its defaults), as ``helm template`` would."""
    rendered = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[Doc] = []
    for template, text in sorted(rendered.items()):
        if template.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def only(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
            for doc in docs if doc["kind"] in ("Deployment", "Job")]


def serving_container(deployment: Doc) -> Doc:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "slmctl"]
    return container


def probes(deployment: Doc) -> dict[str, Doc]:
    container = serving_container(deployment)
    return {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


# -- the custom resources: the fields the chart writes, and what their CRDs require -----------------------

_OBJECT_META = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}, "additionalProperties": False}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
                                          r"(([0-9]+)ms)?)$"}
_SECRET_KEY = {"type": "object", "required": ["key"], "properties": {"name": {"type": "string"},
               "key": {"type": "string"}, "optional": {"type": "boolean"}}, "additionalProperties": False}
#: monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator's CRD: spec.selector is required).
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": _OBJECT_META,
        "spec": {"type": "object", "required": ["selector"], "additionalProperties": False, "properties": {
            "selector": {"type": "object", "additionalProperties": False, "properties": {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
                    "interval": _DURATION, "scrapeTimeout": _DURATION,
                    "authorization": {"type": "object", "additionalProperties": False, "properties": {
                        "type": {"type": "string"}, "credentials": _SECRET_KEY}}}}}}}}}
_QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|[kMGTPE]i?)?$"}
_HPA_RULES = {"type": "object", "additionalProperties": False, "properties": {
    "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
    "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
    "policies": {"type": "array", "items": {"type": "object", "required": ["type", "value", "periodSeconds"],
                                            "additionalProperties": False, "properties": {
                                                "type": {"enum": ["Pods", "Percent"]},
                                                "value": {"type": "integer", "minimum": 1},
                                                "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}}}}}}
#: keda.sh/v1alpha1 ScaledObject (KEDA's CRD: spec.scaleTargetRef.name and spec.triggers[].type/metadata required).
SCALED_OBJECT = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": _OBJECT_META,
        "spec": {"type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
                 "properties": {
                     "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                       "name": {"type": "string"}}},
                     "minReplicaCount": {"type": "integer", "minimum": 0},
                     "maxReplicaCount": {"type": "integer", "minimum": 1},
                     "pollingInterval": {"type": "integer", "minimum": 1},
                     "cooldownPeriod": {"type": "integer", "minimum": 0},
                     "advanced": {"type": "object", "additionalProperties": False, "properties": {
                         "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False,
                                                           "properties": {"behavior": {
                                                               "type": "object", "additionalProperties": False,
                                                               "properties": {"scaleDown": _HPA_RULES,
                                                                              "scaleUp": _HPA_RULES}}}}}},
                     "triggers": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                         "properties": {"type": {"enum": ["prometheus", "cpu", "memory"]},
                                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}}
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
                  ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT}


def validate_strictly(doc: Doc) -> None:
    schema = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc, schema)
        return
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)  # raises on any error or unknown field


# -- rendering and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_validates_strictly(chart: Any, variant: str) -> None:
    docs = render(chart, VARIANTS[variant])
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"} <= set(kinds(docs))
    for doc in docs:
        try:
            validate_strictly(doc)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} at {path}: {error.message}")


@pytest.mark.parametrize("values", ["values.yaml", "values-cpu.yaml", "values-gpu.yaml"])
def test_helm_lint_is_clean(values: str) -> None:
    report = helm.lint(CHART, load_values(values), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_objects_per_variant(chart: Any) -> None:
    assert kinds(render(chart)) == ["Deployment", "Job", "PersistentVolumeClaim", "PodDisruptionBudget", "Service",
                                    "ServiceAccount"]
    hpa = render(chart, VARIANTS["autoscaling-hpa"])
    assert "HorizontalPodAutoscaler" in kinds(hpa) and "ScaledObject" not in kinds(hpa)
    assert "ServiceMonitor" in kinds(hpa)
    keda = render(chart, VARIANTS["autoscaling-keda"])
    assert "ScaledObject" in kinds(keda) and "HorizontalPodAutoscaler" not in kinds(keda)  # KEDA makes its own
    empty = render(chart, VARIANTS["emptydir-noauth-config"])
    assert "Job" not in kinds(empty) and "PersistentVolumeClaim" not in kinds(empty)
    assert "ConfigMap" in kinds(empty)


# -- invariants ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_point_at_the_health_routes_on_the_served_port(chart: Any, variant: str) -> None:
    docs = render(chart, VARIANTS[variant])
    deployment, service = only(docs, "Deployment"), only(docs, "Service")
    container = serving_container(deployment)
    found = probes(deployment)
    assert {name: probe["httpGet"]["path"] for name, probe in found.items()} == {
        "startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/api/health"}
    (port,) = container["ports"]
    assert port["name"] == "http" and port["containerPort"] == PORT
    assert all(probe["httpGet"]["port"] == "http" for probe in found.values())
    args = container["args"]
    assert args[0] == "serve" and args[args.index("--host") + 1] == f"0.0.0.0:{PORT}"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # Start-up may take a model load: the startup probe allows minutes, the others are then quick to act.
    startup = found["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_poststart_hook_and_no_helm_hooks(chart: Any, variant: str) -> None:
    for doc in render(chart, VARIANTS[variant]):
        keys = {key for key, _ in walk(doc)}
        assert "postStart" not in keys, f"{doc['kind']} pulls or runs something in postStart"
        assert "helm.sh/hook" not in doc["metadata"].get("annotations", {})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_replicas_read_the_store_read_only_and_the_pull_job_is_the_only_writer(chart: Any, variant: str) -> None:
    values = VARIANTS[variant]
    docs = render(chart, values)
    deployment = only(docs, "Deployment")
    container = serving_container(deployment)
    assert "--read-only-store" in container["args"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert mount["mountPath"] == "/data" and mount["readOnly"] is True
    assert {"name": "SLMCTL_HOME", "value": "/data"} in container["env"]
    assert {"name": "SLMCTL_AUDIT_LOG", "value": "-"} in container["env"]  # nothing written under SLMCTL_HOME
    models = values.get("models", ["phi4:mini"])
    preloads = [container["args"][i + 1] for i, arg in enumerate(container["args"]) if arg == "--preload"]
    assert preloads == models
    writers = []
    for where, spec in pod_specs(docs):
        for kind in ("initContainers", "containers"):
            for c in spec.get(kind, []):
                if any(m["name"] == "models" and not m.get("readOnly") for m in c.get("volumeMounts", [])):
                    writers.append((where.split("/")[0], kind, c["name"], c["args"]))
    shared = values.get("persistence", {}).get("mode", "shared") == "shared"
    pulled = [args[1] for _, _, _, args in writers]
    assert pulled == models and all(args[0] == "pull" for _, _, _, args in writers)
    if shared:
        assert {(kind, where) for kind, where, _, _ in writers} == {("Job", "initContainers")}
        volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
        assert volume["persistentVolumeClaim"]["readOnly"] is True
        pvc = only(docs, "PersistentVolumeClaim")
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert set(pvc["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}
        job = only(docs, "Job")
        assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == \
            pvc["metadata"]["name"]
        wait = next(c for c in deployment["spec"]["template"]["spec"]["initContainers"]
                    if c["name"] == "wait-for-models")
        assert wait["command"][-len(models):] == models
    else:  # each pod pulls into its own emptyDir, in init containers, before serve starts
        assert {(kind, where) for kind, where, _, _ in writers} == {("Deployment", "initContainers")}


def test_a_new_model_list_makes_a_new_pull_job(chart: Any) -> None:
    first = only(render(chart), "Job")["metadata"]["name"]
    assert only(render(chart), "Job")["metadata"]["name"] == first  # stable: apply and upgrade leave it alone
    second = only(render(chart, {"models": ["phi4:mini", "qwen2.5:0.5b"]}), "Job")["metadata"]["name"]
    assert second != first and second.startswith(f"{RELEASE}-pull-") and len(second) <= 63


@pytest.mark.parametrize("replicas", [2, 3, 5])
def test_replicas_and_the_disruption_budget(chart: Any, replicas: int) -> None:
    docs = render(chart, {"replicaCount": replicas, "podDisruptionBudget": {"minAvailable": replicas - 1}})
    assert only(docs, "Deployment")["spec"]["replicas"] == replicas
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == replicas - 1 < replicas
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_disruption_budget_leaves_room_to_evict(chart: Any, variant: str) -> None:
    values = merge(chart.values, VARIANTS[variant])
    least = values["autoscaling"]["minReplicas"] if values["autoscaling"]["enabled"] else values["replicaCount"]
    deployment = only(render(chart, VARIANTS[variant]), "Deployment")
    assert ("replicas" in deployment["spec"]) is not values["autoscaling"]["enabled"]  # the autoscaler owns it
    assert only(render(chart, VARIANTS[variant]), "PodDisruptionBudget")["spec"]["minAvailable"] < least


def test_a_budget_that_blocks_every_eviction_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="minAvailable"):
        render(chart, {"replicaCount": 1})
    with pytest.raises(helm.HelmError, match="minAvailable"):
        render(chart, {"autoscaling": {"enabled": True, "minReplicas": 1}})
    assert only(render(chart, {"replicaCount": 1, "podDisruptionBudget": {"enabled": False}}),
                "Deployment")["spec"]["replicas"] == 1


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_locked_down_and_has_resources(chart: Any, variant: str) -> None:
    for where, spec in pod_specs(render(chart, VARIANTS[variant])):
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
        assert security["fsGroup"] == 10001 and security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        for c in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where}: {c['name']}"
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"], name
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), name
            assert "memory" in c["resources"]["limits"], name
            if c["name"] != "keys":
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name


def test_the_gpu_profile(chart: Any) -> None:
    values = VARIANTS["gpu"]
    deployment = only(render(chart, values), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = serving_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(f":{chart.metadata['appVersion']}-cuda")
    assert {"name": "SLMCTL_DEVICE", "value": "gpu,cpu"} in container["env"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    job = only(render(chart, values), "Job")["spec"]["template"]["spec"]
    assert "nodeSelector" not in job and "tolerations" not in job  # pulling needs no GPU node
    assert job["initContainers"][0]["args"] == ["pull", "phi4:mini", "--format", "gguf"]
    cpu = serving_container(only(render(chart, VARIANTS["cpu"]), "Deployment"))
    assert not any("gpu" in key for key in cpu["resources"].get("limits", {}))
    assert cpu["image"] == f"slmctl:{chart.metadata['appVersion']}"


def test_autoscaling_on_the_queue_gauge(chart: Any) -> None:
    docs = render(chart, VARIANTS["autoscaling-hpa"])
    hpa, deployment = only(docs, "HorizontalPodAutoscaler"), only(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 8
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Pods"]["pods"]["metric"]["name"] == "slmctl_requests_waiting"
    assert by_type["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    cpu_only = only(render(chart, merge(AUTOSCALING_HPA, {"autoscaling": {"queue": {"enabled": False}}})),
                    "HorizontalPodAutoscaler")
    assert [m["type"] for m in cpu_only["spec"]["metrics"]] == ["Resource"]

    keda = only(render(chart, VARIANTS["autoscaling-keda"]), "ScaledObject")
    assert keda["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    prometheus = next(t for t in keda["spec"]["triggers"] if t["type"] == "prometheus")
    assert prometheus["metadata"]["query"] == \
        f'sum(slmctl_requests_waiting{{namespace="{NAMESPACE}",service="{RELEASE}"}})'


def test_the_service_monitor_scrapes_the_service(chart: Any) -> None:
    docs = render(chart, VARIANTS["autoscaling-hpa"])
    monitor, service = only(docs, "ServiceMonitor"), only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"


def test_api_keys_come_from_the_secret_through_a_private_copy(chart: Any) -> None:
    deployment = only(render(chart), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    secret = next(v for v in spec["volumes"] if v["name"] == "keys-secret")["secret"]
    assert secret["secretName"] == f"{RELEASE}-keys" and secret["items"] == [{"key": "keys.json", "path": "keys.json"}]
    keys_init = next(c for c in spec["initContainers"] if c["name"] == "keys")
    assert "chmod 600 /run/slmctl/keys/keys.json" in keys_init["command"][-1]
    container = serving_container(deployment)
    assert {"name": "SLMCTL_KEYS_FILE", "value": "/run/slmctl/keys/keys.json"} in container["env"]
    assert "--no-auth" not in container["args"]
    named = render(chart, {"auth": {"existingSecret": "team-keys"}})
    assert next(v for v in only(named, "Deployment")["spec"]["template"]["spec"]["volumes"]
                if v["name"] == "keys-secret")["secret"]["secretName"] == "team-keys"
    off = serving_container(only(render(chart, {"auth": {"enabled": False}}), "Deployment"))
    assert "--no-auth" in off["args"] and not any(e["name"] == "SLMCTL_KEYS_FILE" for e in off["env"])


# -- the plain manifests ---------------------------------------------------------------------------------


def test_deploy_k8s_is_what_the_chart_renders_with_its_defaults() -> None:
    proc = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    for path in K8S.glob("*.yaml"):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                assert "namespace" not in doc["metadata"]  # kubectl apply -k / kustomize decide it
                validate_strictly(doc)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_deploy_k8s() -> None:
    proc = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    built = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert kinds(built) == ["Deployment", "Job", "PersistentVolumeClaim", "PodDisruptionBudget", "Service",
                            "ServiceAccount"]


# -- against a real server -------------------------------------------------------------------------------


def serve_args(container: Doc, config: Path | None = None) -> list[str]:
    """The serving container's arguments, but its address (the test binds loopback) and config path."""
    args = list(container["args"][1:])  # without "serve"
    index = args.index("--host")
    del args[index:index + 2]
    if "--config" in args:
        args[args.index("--config") + 1] = str(config)
    return args


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_serve_accepts_the_rendered_command(chart: Any, variant: str, tmp_path: Path) -> None:
    """The serving container's arguments, environment and config file, as serve resolves them."""
    docs = render(chart, VARIANTS[variant])
    container = serving_container(only(docs, "Deployment"))
    args = list(container["args"][1:])
    if "--config" in args:
        config = tmp_path / "config.json"
        config.write_text(only(docs, "ConfigMap")["data"]["config.json"], encoding="utf-8")
        args[args.index("--config") + 1] = str(config)
    env = {e["name"]: e["value"] for e in container["env"] if e["name"] not in ("SLMCTL_HOME", "HOME")}
    proc = subprocess.run([sys.executable, "-m", "slmctl", "serve", *args, "--print-config", "--json"],
                          env=clean_env(tmp_path, env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = {key: item["value"] for key, item in json.loads(proc.stdout).items()}
    assert shown["host"] == "0.0.0.0" and shown["port"] == PORT and shown["read_only_store"] is True
    assert shown["pull_missing"] is False and shown["audit_log"] == "-"
    assert shown["preload"] == VARIANTS[variant].get("models", ["phi4:mini"])
    if variant.startswith("gpu"):
        assert shown["device"] == ["gpu", "cpu"] and shown["parallel"] == 8
    if variant == "emptydir-noauth-config":
        assert shown["keep_alive"] == 3600 and shown["queue"] == 64 and shown["auth"] is False


def test_a_real_server_answers_every_probe_the_chart_renders(chart: Any, private_home: Path,
                                                             tmp_path: Path) -> None:
    from slmctl.security.keys import KeyStore, Role

    docs = render(chart, {"serviceMonitor": {"enabled": True}})
    deployment = only(docs, "Deployment")
    container = serving_container(deployment)
    env = {e["name"]: e["value"] for e in container["env"] if e["name"] not in ("SLMCTL_HOME", "HOME")}
    keys_dir = tmp_path / "keys"  # the pod's private copy of the Secret
    keys_dir.mkdir(mode=0o700)
    _, admin = KeyStore(keys_dir).create("ops", Role.ADMIN)
    env["SLMCTL_KEYS_FILE"] = str(keys_dir / "keys.json")
    assert not (private_home / "keys.json").exists()  # the key file the chart names is the one serve reads
    served = Served(private_home, "--auth", *serve_args(container), env=env, log_dir=tmp_path)
    try:
        paths = {probe["httpGet"]["path"] for probe in probes(deployment).values()}
        deadline = time.monotonic() + 60
        while httpx.get(served.url + "/readyz", timeout=5).status_code != 200:  # the preload, as kubelet waits
            assert time.monotonic() < deadline, served.log()
            time.sleep(0.2)
        for path in sorted(paths):
            answer = httpx.get(served.url + path, timeout=5)  # kubelet sends no API key
            assert answer.status_code == 200, (path, answer.text)
        (endpoint,) = only(docs, "ServiceMonitor")["spec"]["endpoints"]
        metrics = httpx.get(served.url + endpoint["path"], timeout=10)
        assert metrics.status_code == 200
        assert "slmctl_requests_waiting" in metrics.text  # the HPA's and KEDA's metric
        # Auth is on (the probes are public, the API is not) and the store is read-only.
        assert httpx.get(served.url + "/api/tags", timeout=5).status_code == 401
        headers = {"Authorization": f"Bearer {admin}"}
        assert httpx.get(served.url + "/api/tags", headers=headers, timeout=5).status_code == 200
        refused = httpx.request("DELETE", served.url + "/api/delete", json={"model": "phi4:mini"}, headers=headers,
                                timeout=10)
        assert refused.status_code == 403, refused.text
    finally:
        served.stop()
