"""Static checks of infra/k8s: built-in kinds (and the pod templates inside the KubeRay resources)
validate against Kubernetes' schemas; the RayCluster and RayJob have the structure KubeRay needs,
the images compose builds, resource requests, and the environment the code reads; every Secret
reference exists in secrets.example.yaml."""

from __future__ import annotations

from typing import Any

import pytest
from infra_files import DOCKERFILES, K8S, LOCK, ROOT, SERVICE_ENV, compose_image, k8s_documents, load_yaml_documents

K8S_VERSION = "1.31"  # oldest Kubernetes the manifests are meant for
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extras) not installed")


def kind(name: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == name]


def one(name: str) -> dict[str, Any]:
    docs = kind(name)
    assert len(docs) == 1, f"infra/k8s: expected one {name}, found {len(docs)}"
    return docs[0]


def ray_groups() -> list[tuple[str, dict[str, Any]]]:
    """("head" | worker group name, group spec) of the RayCluster."""
    spec = one("RayCluster")["spec"]
    return [("head", spec["headGroupSpec"]), *((g["groupName"], g) for g in spec["workerGroupSpecs"])]


def validate(doc: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")


def as_pod(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}


def env_names(container: dict[str, Any]) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def test_built_in_kinds_validate_against_the_kubernetes_schema():
    built_in = [(path, doc) for path, doc in k8s_documents() if not doc["apiVersion"].startswith("ray.io/")]
    assert {doc["kind"] for _, doc in built_in} >= {"Deployment", "Service", "Secret", "Namespace",
                                                     "PersistentVolumeClaim"}
    for path, doc in built_in:
        validate(doc, f"{path.name} {doc['kind']}/{doc['metadata']['name']}")


def test_pod_templates_inside_kuberay_resources_are_valid_pods():
    for group, spec in ray_groups():
        validate(as_pod(spec["template"], f"ray-{group}"), f"raycluster.yaml {group} group template")
    validate(as_pod(one("RayJob")["spec"]["submitterPodTemplate"], "submitter"), "rayjob.yaml submitterPodTemplate")


def test_raycluster_structure_autoscaling_and_requests():
    cluster = one("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    ray_pin = next(line.split("==")[1] for line in LOCK.read_text().splitlines() if line.startswith("ray=="))
    assert spec["rayVersion"] == ray_pin, f"rayVersion {spec['rayVersion']} differs from the image's ray=={ray_pin}"
    groups = dict(ray_groups())
    assert set(groups) == {"head", "cpu", "gpu"}
    for name, group in groups.items():
        params = group["rayStartParams"]
        assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values()), \
            f"{name}: rayStartParams must map to strings"
        if name != "head":
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1, \
                f"{name}: autoscaling bounds min <= replicas <= max, max >= 1"
        container = group["template"]["spec"]["containers"][0]
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), f"{name}: CPU and memory requests are required"
        gpus = int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
        assert (gpus >= 1) == (name == "gpu") and int(requests.get("nvidia.com/gpu", 0)) == gpus, \
            f"{name}: nvidia.com/gpu only (and equal in requests and limits) in the gpu group"


def test_images_are_the_ones_compose_builds():
    cpu, cuda = compose_image(DOCKERFILES["cpu"]), compose_image(DOCKERFILES["cuda"])
    for name, group in ray_groups():
        image = group["template"]["spec"]["containers"][0]["image"]
        assert image == (cuda if name == "gpu" else cpu), f"RayCluster {name} group runs {image}"
    assert one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == cpu
    assert one("RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"] == cpu


def test_every_workload_sets_the_variables_the_code_reads():
    needed = {scope: {v for v, where in SERVICE_ENV.items() if scope in where.k8s} for scope in ("ray", "mlflow")}
    for name, group in ray_groups():
        missing = needed["ray"] - env_names(group["template"]["spec"]["containers"][0])
        assert not missing, f"RayCluster {name} group does not set {sorted(missing)}"
    mlflow = one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not needed["mlflow"] - env_names(mlflow), f"MLflow Deployment lacks {sorted(needed['mlflow'] - env_names(mlflow))}"
    auth = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    assert auth <= env_names(one("RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0])
    assert auth <= {e["name"] for e in one("RayCluster")["spec"]["autoscalerOptions"]["env"]}


def test_secret_references_exist_in_the_example_secrets():
    secrets = {doc["metadata"]["name"]: set(doc["stringData"]) for doc in load_yaml_documents(K8S / "secrets.example.yaml")}
    refs = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                refs.append(node["secretKeyRef"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for _, doc in k8s_documents():
        if doc["kind"] != "Secret":
            walk(doc)
    assert refs
    for ref in refs:
        assert ref["key"] in secrets.get(ref["name"], set()), \
            f"secretKeyRef {ref['name']}/{ref['key']} is not in secrets.example.yaml"


def test_ray_nodes_reach_mlflow_through_its_service():
    service, deployment = one("Service"), one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    port = service["spec"]["ports"][0]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert f"--port={next(p['containerPort'] for p in container['ports'] if p['name'] == port['targetPort'])}" \
        in container["args"]
    uri = f"http://{service['metadata']['name']}:{port['port']}"
    for name, group in ray_groups():
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == uri, f"RayCluster {name}: MLFLOW_TRACKING_URI != {uri}"
    allowed = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--allowed-hosts="))
    assert f"{service['metadata']['name']}:{port['port']}" in allowed.split(","), "MLflow 3 would refuse the Ray nodes"


def test_rayjob_runs_a_pipeline_config_on_the_raycluster():
    job, cluster = one("RayJob"), one("RayCluster")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    words = job["spec"]["entrypoint"].split()
    assert words[:2] == ["centernet", "run"] and len(words) == 3 and words[2].startswith("configs/")
    assert job["spec"]["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"


def test_rayjob_config_ships_with_the_image():
    config = one("RayJob")["spec"]["entrypoint"].split()[2]
    if not (ROOT / "configs").is_dir():
        pytest.skip("configs/ is not in this checkout yet (`centernet run` and its configs are being added)")
    assert (ROOT / config).is_file(), f"rayjob.yaml runs {config}, which does not exist"


def test_kustomization_lists_existing_files_and_the_cluster():
    kustomization = load_yaml_documents(K8S / "kustomization.yaml")[0]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), f"kustomization.yaml lists missing {resource}"
    assert {"mlflow.yaml", "raycluster.yaml"} <= set(kustomization["resources"])
    namespace = one("Namespace")["metadata"]["name"]
    assert kustomization["namespace"] == namespace
