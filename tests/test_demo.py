"""The README's main job (scripts/demo.py) runs headless ComfyUI and writes what it promises."""
import json
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import REPO
from scripts.demo import CAPTION_BAND, GAP, TITLE_BAND, labelled_grid


def test_main_job_erases_red_from_the_miniature_model_and_writes_the_grid_and_figures(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("grid.png", "spectrum.png", "findings.json", "report.txt", "workflow_api.json"):
        assert (out / name).stat().st_size > 0, name
    tile, seeds, prompts = 32 * 4, 6, 4                          # the labelled layout: titles, a caption per row
    assert Image.open(out / "grid.png").size == (2 * seeds * tile + 3 * GAP,
                                                 TITLE_BAND + prompts * (CAPTION_BAND + tile + GAP))
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


def test_the_grid_labels_its_columns_and_rows():
    """Shared on its own, the picture says which side is before, which after, and what each row prompted."""
    red, blue = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
    red[..., 0], blue[..., 2] = 220, 220
    rows = [("a red circle", [red, red], [blue, blue]), ("a red square", [red, red], [blue, blue])]
    grid = np.asarray(labelled_grid(rows, ("before: the loaded model", "after: red erased")))
    tile, half = 128, 2 * 128

    def has_text(band):           # dark ink on the white band
        return int((band.max(axis=-1) < 128).sum()) > 20

    assert has_text(grid[:TITLE_BAND, GAP:GAP + half]) and has_text(grid[:TITLE_BAND, 2 * GAP + half:])
    for i in range(2):
        top = TITLE_BAND + i * (CAPTION_BAND + tile + GAP)
        assert has_text(grid[top:top + CAPTION_BAND, GAP:GAP + half])                        # the prompt
        before = grid[top + CAPTION_BAND:top + CAPTION_BAND + tile, GAP:GAP + half]
        after = grid[top + CAPTION_BAND:top + CAPTION_BAND + tile, 2 * GAP + half:2 * GAP + 2 * half]
        assert (before == red[0, 0]).all() and (after == blue[0, 0]).all()
