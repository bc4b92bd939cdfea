"""Loading the golden data that the official CenterNet code produced (``tests/fixtures/official``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
OFFICIAL_COMMIT = "4c50fd3a46bdf63dbf2082c5cbb3458d39579e6c"


def load_official(name: str) -> dict[str, np.ndarray]:
    """All arrays of ``tests/fixtures/official/{name}.npz``, checked to come from ``OFFICIAL_COMMIT``."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        arrays = {key: data[key] for key in data.files}
    assert str(arrays["official_commit"]) == OFFICIAL_COMMIT, name
    return arrays


def official_cases(fixture: str, prefix: str, width: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(name, arrays) of each case of a fixture that stores case ``i`` as ``{prefix}{i}_{key}`` (``i``
    zero-padded to ``width`` digits) and the case names as ``{prefix}_names``."""
    data = load_official(fixture)
    cases = []
    for i, name in enumerate(data[f"{prefix}_names"]):
        head = f"{prefix}{i:0{width}d}_"
        cases.append((str(name), {k[len(head):]: v for k, v in data.items() if k.startswith(head)}))
    return cases
