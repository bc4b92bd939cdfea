"""A registered model carries `workflows/pyfunc_model.py` and the `centernet` package in its code/
and must load where this project is not installed: the module may import neither `workflows` nor
`pipeline` (nor Ray), and the models-from-code entry must find it as a top-level module."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("workflows", "pipeline", "ray"):
            raise ImportError(f"forbidden import of {{name}}")
        return None
sys.meta_path.insert(0, Block())
sys.path.insert(0, {code!r})
namespace = {{}}
exec(compile(open({entry!r}).read(), "centernet_model.py", "exec"), namespace)
import mlflow.models.model as model_module
import centernet
print(centernet.__file__)
print(type(model_module.__mlflow_model__).__name__)
"""


def test_model_code_loads_without_the_project(tmp_path):
    from workflows.register import MODEL_CODE

    code = tmp_path / "code"
    shutil.copytree(ROOT / "centernet", code / "centernet", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "workflows" / "pyfunc_model.py", code / "pyfunc_model.py")
    entry = tmp_path / "centernet_model.py"
    entry.write_text(MODEL_CODE)
    # run from an empty folder with the project off sys.path: only code/ provides centernet
    probe = PROBE.format(code=str(code), entry=str(entry))
    proc = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *_, centernet_file, model_class = proc.stdout.strip().splitlines()
    assert Path(centernet_file) == code / "centernet" / "__init__.py" and model_class == "CenterNetPyfunc"
