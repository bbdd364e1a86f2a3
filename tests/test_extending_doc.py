"""docs/EXTENDING.md: every Python block runs, in order, in a fresh folder and a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PAGE = REPO / "docs" / "EXTENDING.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_page_is_linked_from_the_readme() -> None:
    assert "docs/EXTENDING.md" in (REPO / "README.md").read_text()


def test_every_python_block_runs(tmp_path: Path) -> None:
    blocks = _python_blocks(PAGE.read_text())
    assert len(blocks) >= 8, "one block per example and per test the page shows"
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Atan" in done.stdout and "refused: threshold must be >= 0" in done.stdout
    assert (tmp_path / "pruned.onnx").is_file()
