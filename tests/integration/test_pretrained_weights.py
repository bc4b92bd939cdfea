"""ImageNet backbones: downloaded once from a (local, 127.0.0.1) server, hash-checked, cached, loaded."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from pathlib import Path

import pytest
import torch

from centernet.models import PretrainedWeightsError, build_model, default_pretrained, load_pretrained


class _Server:
    """``http.server`` on 127.0.0.1 serving ``root``, counting the requests per path."""

    def __init__(self, root: Path):
        self.root, self.hits = root, []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, state: dict[str, torch.Tensor], name_hash: str | None = None) -> tuple[str, str]:
        """Serve ``state`` as ``resnet18-<hash>.pth`` (its own sha256 prefix unless given); (url, sha256)."""
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        name = f"resnet18-{name_hash or sha[:8]}.pth"
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}", sha


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    s = _Server(root)
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    s.thread.join()


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache for the test ($TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _imagenet_resnet18() -> dict[str, torch.Tensor]:
    """A torchvision-style ResNet-18 ImageNet state dict (backbone keys + the 1000-class ``fc``)."""
    torch.manual_seed(123)
    backbone = {k: torch.randn_like(v) if v.is_floating_point() else v
                for k, v in build_model("resnet18", 2).state_dict().items()
                if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")}
    return {**backbone, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}


def test_imagenet_is_downloaded_once_verified_cached_and_loaded(server, hub, monkeypatch):
    state = _imagenet_resnet18()
    url, sha = server.publish(state)
    monkeypatch.setenv("CENTERNET_PRETRAINED_URL_RESNET18", url)

    model = build_model("resnet18", 3)
    info = load_pretrained(model, "resnet18", "imagenet")
    assert (info.source, info.url, info.sha256) == ("imagenet", url, sha)
    assert Path(info.path) == hub / url.rsplit("/", 1)[1] and Path(info.path).is_file()
    torch.testing.assert_close(model.layer3[0].conv1.weight.detach(), state["layer3.0.conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.bn1.running_var, state["bn1.running_var"], rtol=0, atol=0)
    assert len(info.report.loaded) == len(state) - 2
    assert set(info.report.unexpected) == {"fc.weight", "fc.bias"}
    assert "deconv_layers.0.weight" in info.report.missing and "hm.2.bias" in info.report.missing
    assert len(server.hits) == 1

    again = build_model("resnet18", 3, pretrained="imagenet")  # from the cache: no second request
    assert len(server.hits) == 1
    torch.testing.assert_close(again.layer4[1].conv2.weight.detach(), state["layer4.1.conv2.weight"], rtol=0, atol=0)
    assert sorted(p.name for p in hub.iterdir()) == [Path(info.path).name]


def test_corrupt_download_is_refused_and_not_cached(server, hub, monkeypatch):
    url, sha = server.publish(_imagenet_resnet18(), name_hash="0123abcd")  # name promises another file
    monkeypatch.setenv("CENTERNET_PRETRAINED_URL_RESNET18", url)
    with pytest.raises(PretrainedWeightsError, match="failed its hash check") as err:
        build_model("resnet18", 3, pretrained="imagenet")
    assert "\n" not in str(err.value) and url in str(err.value) and "0123abcd" in str(err.value)
    assert not hub.exists() or list(hub.iterdir()) == []  # neither the file nor a partial download


def test_unreachable_server_says_where_to_put_the_file(hub, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet18-5c106cde.pth"
    monkeypatch.setenv("CENTERNET_PRETRAINED_URL_RESNET18", url)
    model = build_model("resnet18", 3)
    before = model.layer1[0].conv1.weight.detach().clone()
    with pytest.raises(PretrainedWeightsError) as err:
        load_pretrained(model, "resnet18", "imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert url in message and str(hub / "resnet18-5c106cde.pth") in message and "--pretrained none" in message
    torch.testing.assert_close(model.layer1[0].conv1.weight.detach(), before, rtol=0, atol=0)  # no silent fallback


def test_a_wrong_file_in_the_cache_is_refused(hub, monkeypatch):
    url = "http://127.0.0.1:9/resnet18-5c106cde.pth"  # never contacted: the file is cached
    monkeypatch.setenv("CENTERNET_PRETRAINED_URL_RESNET18", url)
    hub.mkdir(parents=True)
    torch.save(_imagenet_resnet18(), hub / "resnet18-5c106cde.pth")
    with pytest.raises(PretrainedWeightsError, match="cached file .*resnet18-5c106cde.pth has sha256"):
        build_model("resnet18", 3, pretrained="imagenet")


def test_local_file_none_and_the_defaults(tmp_path, hub):
    state = _imagenet_resnet18()
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": state}, path)
    model = build_model("resdcn18", 3)
    info = load_pretrained(model, "resdcn18", str(path))
    assert info.url is None and info.source == str(path) and info.path == str(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.testing.assert_close(model.layer2[0].downsample[0].weight.detach(), state["layer2.0.downsample.0.weight"],
                               rtol=0, atol=0)
    assert load_pretrained(model, "resdcn18", "none") is None
    assert not hub.exists()  # neither "none" nor a path touches the cache

    assert [default_pretrained(a) for a in ("resnet18", "resdcn18", "resdcn101", "dla34", "hourglass104")] == \
        ["imagenet"] * 4 + ["none"]
    with pytest.raises(ValueError, match="no ImageNet weights for arch 'hourglass104'"):
        load_pretrained(model, "hourglass104", "imagenet")
    with pytest.raises(FileNotFoundError, match="missing.pth'.* no such file"):
        build_model("resnet18", 3, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="'imagnet': no such file .*'imagenet'"):
        build_model("resnet18", 3, pretrained="imagnet")
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="no tensor matched 'resnet18'"):
        build_model("resnet18", 3, pretrained=str(tmp_path / "foreign.pth"))
