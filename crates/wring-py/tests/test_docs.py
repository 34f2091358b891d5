"""The guide's Python page runs: every ```python block of docs/src/embedding-python.md, in order, in one
namespace, from the repository's root (where the page's paths are relative to)."""

import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "src" / "embedding-python.md"


def blocks():
    return re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), flags=re.S | re.M)


def test_the_python_page_has_examples():
    assert len(blocks()) >= 5


def test_every_python_block_of_the_guide_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "guide"}
    for i, code in enumerate(blocks()):
        try:
            exec(compile(code, f"{PAGE.name}[block {i}]", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - the block's number makes the failure findable
            raise AssertionError(f"block {i} of {PAGE.name} failed: {e!r}\n{code}") from e
