"""The README's main job (scripts/demo.py) runs headless ComfyUI and writes what it promises."""
import subprocess
import sys

from conftest import REPO


def test_main_job_on_a_tiny_random_model_writes_images_and_report(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--size", "64", "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("before.png", "after.png", "before_after.png", "report.txt", "workflow_api.json"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.txt").read_text()
    assert "Forget (alpha 2): Van Gogh" in report and "Retain (alpha 2): Claude Monet" in report
    assert "Mean pixel change" in result.stdout
