"""Pretrained backbone weights: the official ImageNet files, downloaded once and hash-checked.

The sources are the ones the official CenterNet code (xingyizhou/CenterNet, ``src/lib/models/networks``)
loads:

* ResNet-18 / ResNet-101 (``resnet18``, ``resdcn18``, ``resdcn101``): torchvision's ImageNet files,
  the ``model_urls`` of ``msra_resnet.py`` and ``resnet_dcn.py``.
* DLA-34 (``dla34``): the DLA authors' ImageNet file that ``pose_dla_dcn.py`` loads
  (``get_model_url('imagenet', 'dla34', 'ba72cf86')``).
* Hourglass-104: no ImageNet file. The official model is fine-tuned from ExtremeNet's COCO model
  (``readme/GETTING_STARTED.md``: ExtremeNet_500000.pkl from the ExtremeNet repository, converted by
  ``src/tools/convert_hourglass_weight.py`` to ``ExtremeNet_500000.pth``, which
  ``experiments/ctdet_coco_hg.sh`` passes as ``--load_model``). Pass that file's path as ``source``.

Files are cached in torch.hub's cache (``torch.hub.get_dir()/checkpoints``; ``$TORCH_HOME`` moves
it) and verified against the hash prefix in their name (``resnet18-5c106cde.pth``: the first hex
digits of the file's sha256, torch.hub's convention). ``$CENTERNET_PRETRAINED_URL_<ARCH>`` (e.g.
``CENTERNET_PRETRAINED_URL_DLA34``) replaces an architecture's URL, for mirrors and tests; any URL
``urllib`` opens works (``https://``, ``http://``, ``file://``), and its file name must keep the
``-<hash>.`` suffix.

Under DDP only rank 0 needs to load: DDP broadcasts rank 0's parameters when it wraps the model.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from centernet.models.weights import LoadReport, load_matching, read_state_dict

NONE = "none"
IMAGENET = "imagenet"
IMAGENET_URLS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    "resdcn18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    "resdcn101": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
    "dla34": "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth",
}
URL_ENV_PREFIX = "CENTERNET_PRETRAINED_URL_"
_HASH_SUFFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's file-name convention


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be obtained; the message is one line saying what to do."""


@dataclass(frozen=True)
class PretrainedWeights:
    """What was loaded, for the run's records (e.g. MLflow params): where from and which file."""

    source: str  # "imagenet" or the path given
    url: str | None  # the download URL ("imagenet" only)
    path: str  # the local file read
    sha256: str
    report: LoadReport


def default_pretrained(arch: str) -> str:
    """``"imagenet"`` for architectures with an official ImageNet backbone, else ``"none"``."""
    return IMAGENET if arch in IMAGENET_URLS else NONE


def imagenet_url(arch: str) -> str:
    """The ImageNet weights URL of ``arch`` (``$CENTERNET_PRETRAINED_URL_<ARCH>`` when set)."""
    override = os.environ.get(URL_ENV_PREFIX + arch.upper())
    if override:
        return override
    if arch not in IMAGENET_URLS:
        raise ValueError(f"no ImageNet weights for arch {arch!r} (available for {', '.join(sorted(IMAGENET_URLS))}); "
                         "pass a weights file path, or pretrained='none' to train from scratch")
    return IMAGENET_URLS[arch]


def cached_path(url: str) -> Path:
    """Where the file of ``url`` lives in torch.hub's cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, *, progress: bool = False) -> tuple[Path, str]:
    """The local, verified copy of ``url`` and its sha256: downloaded once into torch.hub's cache.

    Raises :class:`PretrainedWeightsError` (one line) when the file cannot be downloaded (naming
    the URL and the cache path where it may be put by hand) or when its sha256 does not start with
    the hash in its name (a corrupt download is deleted, never left in the cache).
    """
    dst = cached_path(url)
    match = _HASH_SUFFIX.search(dst.name)
    if match is None:
        raise ValueError(f"{url}: file name has no '-<sha256 prefix>.' suffix to verify the download against")
    expected = match.group(1)
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Writes to a temporary file in the cache dir, checks the hash, then renames it.
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=expected, progress=progress)
        except RuntimeError as err:
            if "invalid hash value" not in str(err):
                raise
            raise PretrainedWeightsError(
                f"download of {url} failed its hash check (sha256 should start with {expected}); "
                "nothing was cached, try again or check the URL/mirror") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise PretrainedWeightsError(
                f"cannot download {url} ({reason}); put the file at {dst} by hand, "
                "or train from scratch with pretrained='none' (--pretrained none)") from None
    digest = file_sha256(dst)
    if not digest.startswith(expected):
        raise PretrainedWeightsError(
            f"cached file {dst} has sha256 {digest[:len(expected)]}..., not {expected}...: delete it "
            "(or replace it with the right file) and try again")
    return dst, digest


def load_pretrained(model: nn.Module, arch: str, source: str) -> PretrainedWeights | None:
    """Load pretrained backbone weights into ``model`` (tensors matched by name and shape).

    Args:
        model: a detector built by ``build_model(arch, ...)``.
        source: ``"none"`` (nothing loaded, returns None), ``"imagenet"`` (the official file for
            ``arch``, see the module docstring), or the path of a local weights file (e.g. the
            converted ExtremeNet model for ``hourglass104``).

    Raises ``ValueError`` when no tensor matches, :class:`PretrainedWeightsError` when the file
    cannot be obtained, ``FileNotFoundError`` for a missing local path. Under DDP call it on rank 0
    only, before wrapping: DDP broadcasts rank 0's parameters to the other ranks.
    """
    if source == NONE:
        return None
    if source == IMAGENET:
        url = imagenet_url(arch)
        path, digest = fetch(url)
    else:
        url, path = None, Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights {source!r}: no such file "
                                    f"(or use {NONE!r} or {IMAGENET!r})")
        digest = file_sha256(path)
    report = load_matching(model, read_state_dict(path))
    if not report.loaded:
        raise ValueError(f"{path}: no tensor matched {arch!r} by name and shape")
    return PretrainedWeights(source=source, url=url, path=str(path), sha256=digest, report=report)
