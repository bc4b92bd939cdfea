"""`mlflow models serve` of models:/shapes@champion (a real server on a free loopback port, stopped
after): a POST of two base64-encoded images answers the detections `centernet predict` writes."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from workflows.model_source import resolve_model
from workflows.predict import predict_images

pytestmark = pytest.mark.timeout(420)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture
def server(shapes_registry, tmp_path):
    """The champion served by `mlflow models serve --env-manager local` on 127.0.0.1:<free port>."""
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    bin_dir = Path(sys.executable).parent  # the server execs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": shapes_registry.tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m",
                             f"models:/{shapes_registry.name}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                log_text = (tmp_path / "serve.log").read_text()[-3000:]
                pytest.fail(f"mlflow models serve exited ({proc.returncode}): {log_text}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after 300 s: {(tmp_path / 'serve.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: the group started above
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_served_champion_answers_two_images_like_predict(server, shapes_registry, trained_detector, tmp_path):
    files = sorted(Path(trained_detector.data.images_dir).iterdir())[:2]
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    ids = [int(f.stem) for f in files]
    split = _post(f"{server}/invocations", {
        "dataframe_split": {"columns": ["image", "image_id"], "data": [[e, i] for e, i in zip(encoded, ids)]},
        "params": {"threshold": 0.3}})
    inputs = _post(f"{server}/invocations", {"inputs": {"image": encoded, "image_id": ids}})  # default threshold 0.3

    loaded = resolve_model(f"models:/{shapes_registry.name}@champion", tracking_uri=shapes_registry.tracking_uri)
    result = predict_images(loaded, files, tmp_path / "out", threshold=0.3, batch_size=2, draw=False)
    expected = [{k: v for k, v in d.items() if k != "file_name"}
                for d in json.loads(result.detections_path.read_text())]
    assert expected and {d["image_id"] for d in expected} == set(ids)
    assert split["predictions"] == expected
    assert inputs["predictions"] == expected
