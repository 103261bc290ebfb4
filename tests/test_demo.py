"""The README's main job (scripts/demo.py) runs headless ComfyUI and writes what it promises."""
import json
import re
import subprocess
import sys

from conftest import REPO


def test_main_job_erases_red_from_the_miniature_model_and_writes_the_grid_and_figures(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("grid.png", "findings.json", "report.txt", "workflow_api.json"):
        assert (out / name).stat().st_size > 0, name
    findings = json.loads((out / "findings.json").read_text())
    assert len(findings) == 2 * 4 * 6 and {"prompt", "model", "colour", "shape"} <= set(findings[0])
    report = (out / "report.txt").read_text()
    before, total, after = map(int, re.search(r"'red' shown in (\d+)/(\d+) pictures before, (\d+)/\d+ after", report).groups())
    red_prompts = sum(f["model"] == "before" and " red " in f["prompt"] for f in findings)
    assert total == 24 and before >= red_prompts * 0.9 and after <= before / 2, (before, after, red_prompts)
    kept = [f["colour"] == "orange" for f in findings if f["model"] == "after" and " orange " in f["prompt"]]
    assert len(kept) == 6 and sum(kept) >= 4, kept           # the retained neighbour is still drawn
    assert {(f["model"], f["prompt"], f["seed_index"]) for f in findings} == {
        (m, p, i) for m in ("before", "after") for p in {f["prompt"] for f in findings} for i in range(6)}
    assert "Forget (alpha" in report and "red" in report and "orange" in report


def test_main_job_on_a_tiny_random_model_writes_images_and_report(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--model", "tiny", "--out", str(out),
                             "--size", "64", "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("before.png", "after.png", "before_after.png", "report.txt", "workflow_api.json"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.txt").read_text()
    assert "Forget (alpha 2): Van Gogh" in report and "Retain (alpha 2): Claude Monet" in report
    assert "Mean pixel change" in result.stdout
