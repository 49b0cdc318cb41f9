"""Every script in examples/ runs as a user would run it (a subprocess) and prints what it claims."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def run_example(name: str, *args) -> str:
    """stdout of ``python examples/<name>.py args`` (one thread: the examples are tiny, the CPU is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)], capture_output=True,
                            text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def weight_rows(text: str) -> list[list[float]]:
    return [[float(v) for v in row.split(", ")] for row in re.findall(r"sample \d+: \[([^\]]+)\]", text)]


def test_simple_multiscale_demo():
    out = run_example("simple_multiscale_demo.py", "--batch-size", 2, "--projection-dim", 32)
    assert "input: frames_4 (2, 4, 3, 32, 32), frames_8 (2, 8, 3, 32, 32), frames_16 (2, 16, 3, 32, 32)" in out
    learned, attention, eval_scales = out.split("\n== ")[1:]
    for section in (learned, attention):
        assert "fused embedding: (2, 32)" in section
        assert all(f"scale {s:>2}: (2, 32)" in section for s in (4, 8, 16))
        assert float(re.search(rf"max \|difference\| ({NUMBER})", section).group(1)) < 1e-5
        unmasked, masked = weight_rows(section)[:2], weight_rows(section)[2:]
        assert all(sum(row) == pytest.approx(1, abs=2e-3) for row in unmasked + masked)
        assert [row[2] for row in masked] == [0, 0] and masked[1] == [1, 0, 0]
        # sample 0 without its last scale: the remaining weights keep their ratio
        assert masked[0][1] / masked[0][0] == pytest.approx(unmasked[0][1] / unmasked[0][0], rel=2e-2)
    assert weight_rows(learned)[0] == pytest.approx([0.186, 0.307, 0.506], abs=1e-3)  # softmax([0, .5, 1])
    assert weight_rows(attention)[0] != weight_rows(attention)[1]  # attention weights are per sample
    assert "scales computed: [4, 8]" in eval_scales
    assert all(row[2] == 0 and sum(row) == pytest.approx(1, abs=2e-3) for row in weight_rows(eval_scales))


def test_multiscale_training_example(tiny_synthetic):
    out = run_example("multiscale_training_example.py", "--data", tiny_synthetic, "--text", "tiny", "--steps", 6,
                      "--batch-size", 6, "--lr", 3e-3)
    assert "video: frames_4 (6, 4, 3, 32, 32), frames_8 (6, 8, 3, 32, 32), frames_16 (6, 16, 3, 32, 32)" in out
    rows = re.findall(rf"^\s+(\d+)\s+0\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+(\d+)\s",
                      out, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(6))
    for _, total, egonce, temporal, lam, _, pairs in rows:
        assert int(pairs) >= 1 and float(temporal) > 0
        assert float(total) == pytest.approx(float(egonce) + float(lam) * float(temporal), abs=2e-3)
    temperatures = [float(r[5]) for r in rows]
    assert temperatures[0] == pytest.approx(0.1) and temperatures == sorted(temperatures, reverse=True)
    before, after = map(float, re.search(rf"before training ({NUMBER}), after ({NUMBER}) \(decreased", out).groups())
    assert after < before


def test_temporal_pair_sampler_demo(tiny_synthetic):
    out = run_example("temporal_pair_sampler_demo.py", "--data", tiny_synthetic, "--batch-size", 6, "--ratio", 0.5)
    assert "clips 22, videos 4" in out
    fractions = [float(f) for f in re.findall(rf"pair members ({NUMBER}) of the batch", out)]
    assert fractions and min(fractions) >= 0.5
    assert "every batch >= 0.5: True" in out
    assert out.count("each at most once: True") == 3
    assert re.search(r"seen so far \d+ \(100 %\)", out)
    assert "shared clips: 0;" in out


def test_temporal_pair_sampler_demo_generates_a_small_dataset(tmp_path):
    out = run_example("temporal_pair_sampler_demo.py", "--data", tmp_path / "new", "--small")
    assert f"generating the small synthetic dataset in {tmp_path / 'new'}" in out
    assert (tmp_path / "new" / "meta" / "egomcq.json").exists()
    assert "every batch >= 0.3: True" in out and "shared clips: 0;" in out


def test_temporal_training_integration(tiny_synthetic, tmp_path):
    out = run_example("temporal_training_integration.py", "--data", tiny_synthetic, "--out", tmp_path, "--epochs", 2,
                      "--steps-per-epoch", 2, "--batch-size", 6, "--text", "tiny", "-d", "cpu")
    mcq = json.loads((tiny_synthetic / "meta" / "egomcq.json").read_text())
    run_dir = Path(re.search(r"^run directory: (.+)$", out, flags=re.M).group(1))
    assert run_dir.parent == tmp_path / "temporal_integration"
    metrics = json.loads((run_dir / "final_metrics.json").read_text())
    for kind, type_id in (("inter", 1), ("intra", 2)):
        acc, questions = re.search(rf"^  {kind}_video_acc\s+({NUMBER}) %\s+\((\d+) questions\)", out,
                                   flags=re.M).groups()
        assert int(questions) == sum(q["types"] == type_id for q in mcq.values())
        assert float(acc) == pytest.approx(metrics[f"{kind}_video_acc"], abs=0.01)
    assert "scale4/inter_video_acc" in out
    for name in ("latest.pth", "model_best.pth", "checkpoint-epoch2.pth", "train.log", "config.json"):
        assert (run_dir / name).is_file() and name in out
    for tag in ("loss/egonce", "loss/temporal", "schedule/temperature", "schedule/lambda", "fusion/weight_s16",
                "val/inter_video_acc"):
        assert re.search(rf"^  {tag}\s+step", out, flags=re.M), tag
    temperature = re.search(rf"schedule/temperature\s+step\s+1: ({NUMBER})\s+-> step\s+4: ({NUMBER})", out)
    assert float(temperature.group(1)) == pytest.approx(0.1) and float(temperature.group(2)) < 0.1


def test_demo_trains_evaluates_the_final_weights_and_prints_where_the_curves_are(tiny_synthetic, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    overrides = ["trainer.epochs=1", "trainer.max_steps_per_epoch=2", f"trainer.save_dir={tmp_path}",
                 "data_loader.args.batch_size=4", "valid_data_loader.args.batch_size=4"]
    result = subprocess.run([sys.executable, str(ROOT / "run" / "demo.py"), "--data", str(tiny_synthetic),
                             *[arg for o in overrides for arg in ("--set", o)]],
                            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    inter, intra = map(float, re.search(rf"inter-video\s+({NUMBER}) %\s+intra-video\s+({NUMBER}) %",
                                        result.stdout).groups())
    curves = Path(re.search(r"learning curves: (\S+)", result.stdout).group(1))
    assert curves.is_file() and curves.parent.parent.parent == tmp_path
    saved = json.loads((curves.parent / "egomcq_results.json").read_text())
    assert (inter, intra) == (round(saved["inter_video_acc"], 1), round(saved["intra_video_acc"], 1))
    assert "chance: 20.0 %" in result.stdout and f"--resume {curves.parent / 'latest.pth'}" in result.stdout
