"""The script example runs as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_script(tmp_path: Path) -> None:
    env = {**os.environ, "OFNOTEBOOK_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "invoke: {'greeting': 'hello ada', 'model': '2026-11'}" in out
    assert "divide by 4: {'result': 2.5}" in out
    assert "remote error: ZeroDivisionError - division by zero" in out
    assert "stopped: ['greet', 'divider']" in out
