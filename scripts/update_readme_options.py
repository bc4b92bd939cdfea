"""Regenerate the option tables of README.md from the config declarations.

Each table sits between ``<!-- options: NAME -->`` and ``<!-- /options -->``; NAME is a key of
``TABLES``. ``--check`` exits non-zero when a table is out of date (tests/contract runs it).
"""

from __future__ import annotations

import re
import sys
from importlib import import_module
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = {
    "train": "workflows.train_config:TrainConfig",
    "precompute": "pipeline.schema:PrecomputeSettings",
    "tune": "workflows.tune_config:TuneConfig",
}


def render(text: str) -> str:
    from workflows.cli_options import options_table

    def table(match: re.Match) -> str:
        module, _, name = TABLES[match.group(1)].partition(":")
        return f"{match.group(0).splitlines()[0]}\n{options_table(getattr(import_module(module), name))}\n<!-- /options -->"

    return re.sub(r"<!-- options: (\w+) -->\n.*?<!-- /options -->", table, text, flags=re.S)


def main() -> int:
    text = README.read_text()
    new = render(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            print("README.md option tables are out of date: run python scripts/update_readme_options.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
