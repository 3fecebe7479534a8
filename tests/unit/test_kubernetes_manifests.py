"""The KubeRay manifests in deploy/kubernetes/, checked without a cluster or Ray.

Core objects (Service, ConfigMap, Job, and the Service embedded as a RayService's
`serveService`) are validated strictly against Kubernetes' own schemas with
kubernetes_validate; the RayService/RayCluster CRDs have no schema there, so each of
their pod templates is validated as a core PodTemplate, and the KubeRay structure
around them is checked by hand. The Serve configs inside (serveConfigV2, the
ConfigMap) are validated with the project's own ServeDeploySchema.
"""

from __future__ import annotations

import ast
import copy
import pathlib
import re
import shutil
import subprocess
from typing import Any, Dict, Iterator, List, Tuple

import kubernetes_validate  # in the test extra: a missing validator fails this module, it does not skip
import pytest
import yaml
from pydantic import ValidationError

from ray_serving_ext.config_file import ServeDeploySchema

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFEST_DIR = ROOT / "deploy" / "kubernetes"
MANIFESTS = ("rayservice.yaml", "raycluster.yaml")
# A Kubernetes version whose schemas kubernetes-validate >= 1.30 ships.
K8S_VERSION = "1.30.0"
KUBERAY_KINDS = ("RayService", "RayCluster")
SERVE_PORT = 8000
ADMIN_PORT = 8265
PROBE_PATHS = {"readinessProbe": "/-/healthz", "livenessProbe": "/-/routes", "startupProbe": "/-/routes"}

Doc = Dict[str, Any]


def _load(name: str) -> List[Doc]:
    return [doc for doc in yaml.safe_load_all((MANIFEST_DIR / name).read_text()) if doc is not None]


DOCS: List[Tuple[str, Doc]] = [(name, doc) for name in MANIFESTS for doc in _load(name)]


def _id(name: str, doc: Doc, suffix: str = "") -> str:
    return f"{name}:{doc['kind']}/{doc['metadata']['name']}{suffix}"


def _kuberay() -> List[Tuple[str, Doc]]:
    return [(name, doc) for name, doc in DOCS if doc["kind"] in KUBERAY_KINDS]


def _cluster_spec(doc: Doc) -> Doc:
    return doc["spec"]["rayClusterConfig"] if doc["kind"] == "RayService" else doc["spec"]


def _groups(doc: Doc) -> Iterator[Tuple[str, Doc]]:
    """("head", headGroupSpec), then (groupName, workerGroupSpec) for each worker group."""
    spec = _cluster_spec(doc)
    yield "head", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def _templates() -> List[Tuple[str, Doc]]:
    return [(_id(name, doc, f":{group}"), spec["template"]) for name, doc in _kuberay() for group, spec in _groups(doc)]


def _ray_containers() -> List[Tuple[str, Doc]]:
    return [(f"{where}:{c['name']}", c) for where, template in _templates() for c in template["spec"]["containers"]]


def _core_objects() -> List[Tuple[str, Doc]]:
    """Top-level core objects, plus each RayService's embedded serveService (a core Service)."""
    found = [(_id(name, doc), doc) for name, doc in DOCS if doc["kind"] not in KUBERAY_KINDS]
    found += [(_id(name, doc, ":serveService"), doc["spec"]["serveService"])
              for name, doc in DOCS if doc["kind"] == "RayService" and "serveService" in doc["spec"]]
    return found


def _serve_configs() -> List[Tuple[str, str]]:
    """(where, YAML text) of every Serve config: serveConfigV2 and the ConfigMaps' files."""
    found = [(_id(name, doc), doc["spec"]["serveConfigV2"]) for name, doc in DOCS if doc["kind"] == "RayService"]
    found += [(_id(name, doc, f":{key}"), text) for name, doc in DOCS if doc["kind"] == "ConfigMap"
              for key, text in doc["data"].items()]
    return found


def _only(kind: str, name: str) -> Doc:
    docs = [doc for manifest, doc in DOCS if manifest == name and doc["kind"] == kind]
    assert len(docs) == 1, f"{name}: expected one {kind}, found {len(docs)}"
    return docs[0]


def _head_container(doc: Doc) -> Doc:
    return _cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _ports(container: Doc) -> Dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _env(container: Doc) -> Dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _as_pod_template(name: str, template: Doc) -> Doc:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def _bash_syntax_ok(script: str) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n"], input=script, text=True, capture_output=True, timeout=10)
    assert result.returncode == 0, result.stderr


# ---- what the manifests hold ---------------------------------------------------------------
def test_each_manifest_holds_the_expected_objects() -> None:
    kinds = {name: sorted(doc["kind"] for manifest, doc in DOCS if manifest == name) for name in MANIFESTS}
    assert kinds == {"rayservice.yaml": ["RayService"],
                     "raycluster.yaml": ["ConfigMap", "Job", "RayCluster", "Service"]}
    api_versions = {"RayService": "ray.io/v1", "RayCluster": "ray.io/v1", "Service": "v1", "ConfigMap": "v1",
                    "Job": "batch/v1"}
    assert all(doc["apiVersion"] == api_versions[doc["kind"]] for _, doc in DOCS)
    assert len(_core_objects()) == 4 and len(_templates()) == 6 and len(_serve_configs()) == 2


# ---- core objects, strictly ------------------------------------------------------------------
@pytest.mark.parametrize("obj", [o for _, o in _core_objects()], ids=[w for w, _ in _core_objects()])
def test_core_objects_validate_strictly(obj: Doc) -> None:
    assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == "1.30"


def _service() -> Doc:
    return copy.deepcopy(_only("Service", "raycluster.yaml"))


@pytest.mark.parametrize("breakage", ["port_as_text", "unknown_field", "wrong_type_of_selector"])
def test_the_validator_rejects_a_broken_service(breakage: str) -> None:
    service = _service()
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)  # valid as loaded
    if breakage == "port_as_text":
        service["spec"]["ports"][0]["port"] = "eight thousand"
    elif breakage == "unknown_field":
        service["spec"]["selectr"] = service["spec"].pop("selector")
    else:
        service["spec"]["selector"] = ["ray.io/cluster"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


# ---- the CRDs' pod templates, as core PodTemplates ------------------------------------------
@pytest.mark.parametrize("template", [t for _, t in _templates()], ids=[w for w, _ in _templates()])
def test_pod_templates_validate_as_core_pod_templates(template: Doc) -> None:
    kubernetes_validate.validate(_as_pod_template("ray-pod", template), K8S_VERSION, strict=True)


def test_the_pod_template_check_rejects_a_broken_container() -> None:
    where, template = _templates()[0]
    broken = copy.deepcopy(template)
    broken["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_as_pod_template("ray-pod", broken), K8S_VERSION, strict=True)
    broken = copy.deepcopy(template)
    broken["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [SERVE_PORT]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_as_pod_template("ray-pod", broken), K8S_VERSION, strict=True)


# ---- KubeRay's structure, by hand -----------------------------------------------------------
@pytest.mark.parametrize("doc", [d for _, d in _kuberay()], ids=[_id(n, d) for n, d in _kuberay()])
def test_kuberay_structure(doc: Doc) -> None:
    spec = _cluster_spec(doc)
    assert isinstance(spec["rayVersion"], str)
    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert isinstance(params, dict) and params
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), params
    assert set(head) <= {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
    workers = spec["workerGroupSpecs"]
    names = [group["groupName"] for group in workers]
    assert len(names) == len(set(names)) == 2
    for group in workers:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "template"):
            assert key in group, (group.get("groupName"), key)
        assert all(isinstance(group[k], int) for k in ("replicas", "minReplicas", "maxReplicas"))
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group.get("rayStartParams", {}).values())
    gpu_groups = []
    for group in workers:
        for container in group["template"]["spec"]["containers"]:
            resources = container["resources"]
            if "nvidia.com/gpu" in resources.get("limits", {}):
                assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
                gpu_groups.append(group["groupName"])
    assert gpu_groups == ["gpu-workers"]
    gpu = next(g for g in workers if g["groupName"] == "gpu-workers")
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["template"]["spec"]["tolerations"])
    if spec.get("enableInTreeAutoscaling"):
        autoscaler = spec["autoscalerOptions"]["resources"]
        assert {"cpu", "memory"} <= set(autoscaler["requests"]) and {"cpu", "memory"} <= set(autoscaler["limits"])


def test_rayservice_upgrades_to_a_new_cluster() -> None:
    spec = _only("RayService", "rayservice.yaml")["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    assert isinstance(spec["serveConfigV2"], str)  # a YAML string, as KubeRay requires
    # Deprecated and ignored since KubeRay 1.1; their presence would suggest they act.
    assert "serviceUnhealthySecondThreshold" not in spec and "deploymentUnhealthySecondThreshold" not in spec


def _all_containers() -> List[Tuple[str, Doc]]:
    jobs = [(_id(n, d), c) for n, d in DOCS if d["kind"] == "Job" for c in d["spec"]["template"]["spec"]["containers"]]
    return _ray_containers() + jobs


@pytest.mark.parametrize("container", [c for _, c in _all_containers()], ids=[w for w, _ in _all_containers()])
def test_every_container_has_requests_and_limits(container: Doc) -> None:
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), (container["name"], kind)
    assert container["image"].startswith("ghcr.io/example/ray-serving-ext:")  # the documented placeholder


@pytest.mark.parametrize("where,container", _ray_containers(), ids=[w for w, _ in _ray_containers()])
def test_every_ray_container_probes_its_proxy(where: str, container: Doc) -> None:
    is_head = where.endswith(":head:ray-head")
    for probe, path in PROBE_PATHS.items():
        if is_head and probe == "readinessProbe":
            continue  # the head's readiness is the admin API's port (next test)
        http = container[probe]["httpGet"]
        assert (http["path"], http["port"]) == (path, SERVE_PORT), (container["name"], probe)
    assert _ports(container)["serve"] == SERVE_PORT


@pytest.mark.parametrize("doc", [d for _, d in _kuberay()], ids=[_id(n, d) for n, d in _kuberay()])
def test_the_heads_readiness_does_not_wait_for_an_application(doc: Doc) -> None:
    # KubeRay sends its first PUT only once the head pod is Ready, and the proxy's
    # /-/healthz is 503 until an application has a route: a head whose readiness were
    # /-/healthz would never become Ready, so no config would ever be deployed. Its
    # readiness is the admin API taking connections (a TCP check: it needs no API key).
    head = _head_container(doc)
    assert head["readinessProbe"] == {**head["readinessProbe"], "tcpSocket": {"port": ADMIN_PORT}}
    assert "httpGet" not in head["readinessProbe"] and "exec" not in head["readinessProbe"]
    assert int(_env(head)["RAY_SERVE_EXT_ADMIN_PORT"]) == ADMIN_PORT


# ---- how KubeRay reaches the admin API -------------------------------------------------------
@pytest.mark.parametrize("doc", [d for _, d in _kuberay()], ids=[_id(n, d) for n, d in _kuberay()])
def test_the_head_serves_the_admin_api_on_the_dashboard_port(doc: Doc) -> None:
    constants = (ROOT / "ray_serving_ext" / "_private" / "constants.py").read_text()
    for var in ("RAY_SERVE_EXT_ADMIN_HOST", "RAY_SERVE_EXT_ADMIN_PORT"):
        assert f'"{var}"' in constants  # the names the controller really reads
    head = _head_container(doc)
    env, ports = _env(head), _ports(head)
    assert env["RAY_SERVE_EXT_ADMIN_HOST"] == "0.0.0.0"
    # KubeRay sends the Serve REST API to the head Service's port named "dashboard".
    assert int(env["RAY_SERVE_EXT_ADMIN_PORT"]) == ports["dashboard"] == ADMIN_PORT
    ray_dashboard = int(_cluster_spec(doc)["headGroupSpec"]["rayStartParams"]["dashboard-port"])
    assert ray_dashboard != ADMIN_PORT and ports["ray-dashboard"] == ray_dashboard
    assert len(set(ports.values())) == len(ports)
    for group, spec in _groups(doc):
        if group != "head":
            for container in spec["template"]["spec"]["containers"]:
                assert not any(k.startswith("RAY_SERVE_EXT_ADMIN") for k in _env(container))


def _post_start(doc: Doc) -> str:
    command = _head_container(doc)["lifecycle"]["postStart"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"] and len(command) == 3
    return command[2]


def _config_for(doc: Doc) -> Doc:
    if doc["kind"] == "RayService":
        return yaml.safe_load(doc["spec"]["serveConfigV2"])
    (text,) = _only("ConfigMap", "raycluster.yaml")["data"].values()
    return yaml.safe_load(text)


@pytest.mark.parametrize("doc", [d for _, d in _kuberay()], ids=[_id(n, d) for n, d in _kuberay()])
def test_the_head_starts_serve_with_the_configs_http_options(doc: Doc) -> None:
    script = _post_start(doc)
    _bash_syntax_ok(script)
    python = script.split("<<'EOF'", 1)[1].split("\n", 1)[1].split("\nEOF\n", 1)[0]  # the heredoc's body
    compile(python, "postStart", "exec")
    assert 'ray.init(address="auto"' in python and "detached=True" in python
    match = re.search(r"http_options=(\{.*?\})", python, re.S)
    assert match is not None
    config = _config_for(doc)
    assert ast.literal_eval(match.group(1)) == config["http_options"]
    assert re.search(r'proxy_location="(\w+)"', python).group(1) == config["proxy_location"]


# ---- the Serve configs -----------------------------------------------------------------------
@pytest.mark.parametrize("text", [t for _, t in _serve_configs()], ids=[w for w, _ in _serve_configs()])
def test_serve_configs_validate_and_are_the_example_app(text: str) -> None:
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    assert (schema.http_options.host, schema.http_options.port) == ("0.0.0.0", SERVE_PORT)
    example = yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text())
    example["http_options"]["host"] = "0.0.0.0"  # the example binds loopback; a pod must not
    assert yaml.safe_load(text) == example


@pytest.mark.parametrize("text", [t for _, t in _serve_configs()], ids=[w for w, _ in _serve_configs()])
def test_import_paths_name_modules_in_the_repo(text: str) -> None:
    apps = yaml.safe_load(text)["applications"]
    assert apps
    for app in apps:
        module, _, attr = app["import_path"].partition(":")
        path = ROOT.joinpath(*module.split("."))
        source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        assert source.is_file(), app["import_path"]
        assert re.search(rf"^{re.escape(attr)}\s*=", source.read_text(), re.M), app["import_path"]


@pytest.mark.parametrize("change", [{"target_capacity": 150}, {"proxy_locaton": "EveryNode"}])
def test_the_schema_rejects_a_broken_serve_config(change: Doc) -> None:
    config = yaml.safe_load(_serve_configs()[0][1])
    ServeDeploySchema.model_validate(config)
    config.update(change)
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(config)


# ---- Services and the deploy Job -------------------------------------------------------------
def test_services_expose_port_8000_of_the_serve_pods() -> None:
    cluster = _only("RayCluster", "raycluster.yaml")
    service = _only("Service", "raycluster.yaml")["spec"]
    assert service["type"] == "ClusterIP"
    # KubeRay's pod labels: the cluster's workers (readiness /-/healthz), not the head (above).
    assert service["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "worker"}
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(SERVE_PORT, SERVE_PORT)]
    # The RayService's Service is KubeRay's: it sets the selector (the serving cluster's ready proxies).
    serve_service = _only("RayService", "rayservice.yaml")["spec"]["serveService"]["spec"]
    assert serve_service["type"] == "ClusterIP" and "selector" not in serve_service
    assert [(p["name"], p["port"]) for p in serve_service["ports"]] == [("serve", SERVE_PORT)]


def test_the_job_deploys_the_configmap_through_the_admin_api() -> None:
    cluster = _only("RayCluster", "raycluster.yaml")
    config_map = _only("ConfigMap", "raycluster.yaml")
    pod = _only("Job", "raycluster.yaml")["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    (key,) = config_map["data"]
    assert container["command"][:2] == ["/bin/bash", "-c"]
    script = container["command"][2]
    _bash_syntax_ok(script)
    assert re.search(rf'serve-ext deploy {re.escape(mount["mountPath"])}/{re.escape(key)} --address "\$SERVE_ADDRESS"',
                     script)
    # The head Service KubeRay creates is <cluster>-head-svc; its "dashboard" port is the admin API.
    assert _env(container)["SERVE_ADDRESS"] == f"http://{cluster['metadata']['name']}-head-svc:{ADMIN_PORT}"


def test_the_dockerfile_matches_the_manifests() -> None:
    dockerfile = (MANIFEST_DIR / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=rayproject/ray:(\d+\.\d+\.\d+)-py311$", dockerfile, re.M)
    assert base is not None
    for _, doc in _kuberay():
        assert _cluster_spec(doc)["rayVersion"] == base.group(1)
    assert re.search(r"^COPY .*\bexamples /home/ray/app/examples$", dockerfile, re.M)
    assert re.search(r"^ENV PYTHONPATH=/home/ray/app$", dockerfile, re.M)
