"""The kernel probe in its CPU smoke mode: it writes a valid results file whose int8 weight-only
kernel matches its dequantized reference, with measured ceilings and ratios against dense."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_probe_smoke_writes_ratios_ceilings_and_checked_outputs(tmp_path):
    out = tmp_path / "probe.json"
    subprocess.run([sys.executable, str(ROOT / "kernels" / "probe.py"), "--smoke", "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    report = json.loads(out.read_text())
    assert report["ceilings"]["matmul_flops"] > 0 and report["ceilings"]["copy_bytes_per_s"] > 0
    int8 = [c for c in report["cases"] if c["kind"] == "int8"]
    assert {c["tokens"] for c in int8} == {1, 16}
    for c in int8:
        assert c["max_rel_err"] < 1e-3               # the kernel computes x (s ⊙ q)ᵀ
        assert c["speedup"] == c["dense_s"] / c["seconds"] and 0 < c["achieved_fraction"]
    # formats this device lacks are recorded as such, never timed
    assert all(("error" in c) != ("seconds" in c) for c in report["cases"])
