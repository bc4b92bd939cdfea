"""The files under infra/ and what the static checks (test_infra*.py) hold them to: which
environment variables the code reads to reach the services, and where each must be set."""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
K8S = INFRA / "k8s"
DOCKERFILES = {"cpu": INFRA / "docker" / "Dockerfile", "cuda": INFRA / "docker" / "Dockerfile.cuda"}
LOCK = INFRA / "docker" / "requirements.lock"
CODE_PACKAGES = ("centernet", "pipeline", "workflows")

RAY_NODES = ("ray-head", "ray-worker", "ray-worker-gpu")


@dataclass(frozen=True)
class ServiceEnv:
    """Where a variable must be set: compose services, and Kubernetes workloads ("ray": every Ray
    container of the RayCluster, "mlflow": the MLflow Deployment)."""

    compose: tuple[str, ...]
    k8s: tuple[str, ...]


_S3_CREDENTIALS = ServiceEnv(compose=(*RAY_NODES, "mlflow"), k8s=("ray", "mlflow"))
# Variables the code (or pyarrow, boto3, MLflow and Ray underneath it) reads to reach the services.
SERVICE_ENV: dict[str, ServiceEnv] = {
    "MLFLOW_TRACKING_URI": ServiceEnv(compose=RAY_NODES, k8s=("ray",)),
    "AWS_ACCESS_KEY_ID": _S3_CREDENTIALS,
    "AWS_SECRET_ACCESS_KEY": _S3_CREDENTIALS,
    "AWS_DEFAULT_REGION": _S3_CREDENTIALS,
    # pyarrow.fs (shards, checkpoints) and boto3: the endpoint of a non-AWS S3
    "AWS_ENDPOINT_URL_S3": ServiceEnv(compose=RAY_NODES, k8s=("ray",)),
    # MLflow's S3 artifact client (the server, and any client logging to s3:// directly)
    "MLFLOW_S3_ENDPOINT_URL": _S3_CREDENTIALS,
    "AWS_EC2_METADATA_DISABLED": ServiceEnv(compose=RAY_NODES, k8s=()),  # no metadata service in compose
    "RAY_AUTH_MODE": ServiceEnv(compose=RAY_NODES, k8s=("ray",)),
    "RAY_AUTH_TOKEN": ServiceEnv(compose=RAY_NODES, k8s=("ray",)),
    "PREFECT_API_URL": ServiceEnv(compose=RAY_NODES, k8s=()),
    "MLFLOW_BACKEND_STORE_URI": ServiceEnv(compose=("mlflow",), k8s=("mlflow",)),
    "MLFLOW_ARTIFACTS_DESTINATION": ServiceEnv(compose=(), k8s=("mlflow",)),  # compose: the flag
}
# Read by the code but deliberately not set by the stack, and why.
NOT_SET_BY_STACK: dict[str, str] = {
    "CENTERNET_GIT_COMMIT": "set by `centernet submit` for the job",
    "MLFLOW_TRACKING_USERNAME": "only for tracking servers with authentication",
    "MLFLOW_TRACKING_PASSWORD": "only for tracking servers with authentication",
    "MLFLOW_TRACKING_TOKEN": "only for tracking servers with authentication",
    "AWS_SESSION_TOKEN": "only for temporary AWS credentials",
    "RAY_ADDRESS": "client side; Ray sets it inside jobs",
    "RAY_JOBS_ADDRESS": "client side",
    "RAY_AUTH_TOKEN_PATH": "client side alternative to RAY_AUTH_TOKEN",
    "AWS_ENDPOINT_URL": "the stack sets the S3-only AWS_ENDPOINT_URL_S3; forwarded when a user sets it",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "MLflow client's retries; MLflow's default unless a user sets it",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "MLflow client's retry backoff; MLflow's default unless a user sets it",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "MLflow client's request timeout; MLflow's default unless a user sets it",
    "CENTERNET_FLOW_FAIL_ONCE": "a test hook of `centernet run` (one injected transient failure)",
    "PREFECT_LOGGING_LEVEL": "Prefect's log level; `centernet run` keeps Prefect quiet unless a user sets it",
    "RAY_AIR_NEW_OUTPUT": "set by `centernet tune` for its own process (Tune's console output)",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last
    silently; Docker Compose and kubectl refuse the file). Keys merged in with ``<<`` may be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_documents(path: Path) -> list[Any]:
    """Every non-empty document of a YAML file (safe loading, duplicate keys refused)."""
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_UniqueKeyLoader) if doc is not None]


def compose() -> dict[str, Any]:
    return load_yaml_documents(COMPOSE)[0]


def env_example() -> dict[str, str]:
    """``NAME=value`` lines of infra/.env.example."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def compose_image(dockerfile: Path) -> str:
    """The ``image:`` tag compose builds from ``dockerfile`` (exactly one)."""
    tags = {svc["image"] for svc in compose()["services"].values()
            if "build" in svc and (ROOT / svc["build"]["dockerfile"]).resolve() == dockerfile.resolve()}
    assert len(tags) == 1, f"{COMPOSE}: services built from {dockerfile} name {sorted(tags)} images, expected one tag"
    return tags.pop()


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """(file, document) for every manifest under infra/k8s (kustomization.yaml excluded)."""
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in load_yaml_documents(path)]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environ_reads(package_dir: Path) -> dict[str, str]:
    """Environment variable names read as ``os.environ[...]``, ``os.environ.get(...)`` or
    ``os.getenv(...)`` in a package, literal or through a module-level string constant -> file
    (assignments such as ``os.environ[NAME] = ...`` are writes, not reads)."""
    found: dict[str, str] = {}
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Call) and node.args and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "get" and _is_environ(node.func.value))
                    or (isinstance(node.func, ast.Attribute) and node.func.attr == "getenv")):
                key = node.args[0]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found[key.value] = str(path.relative_to(package_dir.parent))
            elif isinstance(key, ast.Name) and key.id in constants:
                found[constants[key.id]] = str(path.relative_to(package_dir.parent))
    return found


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?\-+][^}]*)?\}")  # ${VAR}, ${VAR:-x}, not $${...}
CONTAINER_VAR = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)")  # $$VAR: expanded inside the container
