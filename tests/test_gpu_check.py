"""scripts/gpu_check.py runs end to end on the CPU with tiny sizes, so it is known to work before a GPU is
lent: the checks that can run here pass, the GPU-only ones say why they are skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_ends_with_its_summary_line(tmp_path):
    pytest.importorskip("bitsandbytes")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu check: 2 passed, 3 skipped, 0 failed on cpu")
    results = {r["check"][0]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["results"]}
    assert [results[n]["status"] for n in "12345"] == ["pass", "skipped", "skipped", "pass", "skipped"]
    assert "max |logit difference|" in results["1"]["detail"] + results["4"]["detail"]
    table = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert table[0] == "| check | status | seconds | detail |" and len(table) == 2 + 5
