"""`make demo`'s script end to end on the embedded model, cut to one training step and four items."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_every_step_and_keeps_an_earlier_demo(tmp_path, embedded_model_dir):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "from-an-earlier-demo.txt").write_text("keep me")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--seed", "3",
         "--max_steps", "1", "--num_test", "4"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    kept = [path for path in tmp_path.iterdir() if path.name.startswith("demo-")]
    assert len(kept) == 1 and (kept[0] / "from-an-earlier-demo.txt").read_text() == "keep me"
    # Each step is printed as the grpolab command a user would type.
    for command in ("$ grpolab data arith", "$ grpolab eval --model smollm2-135m-instruct", "$ grpolab train",
                    "$ grpolab eval --adapter"):
        assert command in result.stdout
    rows = [json.loads(line) for line in (out / "data" / "arith.jsonl").read_text().splitlines()]
    assert sum(row["split"] == "test" for row in rows) == 4
    base = json.loads((out / "eval-base" / "metrics.json").read_text())
    trained = json.loads((out / "eval-trained" / "metrics.json").read_text())
    assert base["items"] == trained["items"] == 4
    assert trained["config"]["adapter"] == str(out / "run")
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [1]
    comparison = (out / "eval-trained" / "comparison.md").read_text()
    assert "strict accuracy" in comparison and "difference" in comparison
    assert "(95% Wilson intervals)" in result.stdout and "exact McNemar p = " in result.stdout
    assert (out / "eval-trained" / "comparison.png").stat().st_size > 10_000
    assert "total" in result.stdout.splitlines()[-2]
