"""mypy on the package, with the configuration in pyproject.toml (strict on the layers below
the handle): a type error fails the suite as a test does, with mypy's report as the message.

mypy keeps its cache in the checkout's ``.mypy_cache``, so a run after a small edit rechecks
only what changed (a cold run takes about 10 s on 2 cores).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.typecheck


def test_mypy_passes_on_the_package() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "ofnotebook"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mypy ofnotebook failed:\n{done.stdout}{done.stderr}"
