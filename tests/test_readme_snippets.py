"""Every python snippet of the README runs as written, on the CPU, in a fresh interpreter (as a user would)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_snippets():
    assert len(snippets()) >= 2


@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs_as_written(index, tmp_path):
    code = snippets()[index]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as installed: no interpreter
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert out.returncode == 0, f"README snippet {index} failed:\n{code}\n{out.stderr[-3000:]}"
