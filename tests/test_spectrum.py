"""Erasure Spectrum: the figures it draws are the erase node's own, and the picture shows them."""
import numpy as np
import pytest
import torch

from conftest import pack_module
from test_export import PAIRS


@pytest.fixture(scope="module")
def spectrum(pack):
    return pack_module("comfy_glue.spectrum_chart")


def red_pixels(image) -> int:
    pixels = np.asarray(image)
    return int((np.abs(pixels.astype(int) - np.array([205, 60, 50])).sum(-1) == 0).sum())


def test_the_charts_are_the_erasers_own_spectra_and_the_reports_layer_figures(built, erase, spectrum):
    from cure_core.spectral import expansion, spectral_basis, split_rows
    model, clip = built("SD1.x")
    patched, report = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet", alpha_forget=3.0)
    erasure = pack_module("comfy_glue.patching").erasures_on(patched)[0]
    heading, charts = spectrum.charts_for(erasure)
    assert heading.startswith("CURE spectral eraser on SD1.x: Van Gogh, Starry Night")
    forget_chart, retain_chart, layer_chart = charts
    energy, gains = forget_chart.series[0][2], forget_chart.series[1][2]
    forget = erasure.record.rows["forget"]                               # SD1.x reads the rows as they are
    per_concept = [spectral_basis(rows)[1] for rows in split_rows(forget.rows, forget.counts)]   # each its own shares
    expected = torch.sort(torch.cat(per_concept), descending=True).values
    assert energy == pytest.approx(expected.tolist()[:len(energy)], abs=1e-6)
    assert "each concept's energy shares" in forget_chart.title
    assert gains == pytest.approx(expansion(torch.tensor(energy, dtype=torch.float64), 3.0).tolist(), abs=1e-6)
    assert "alpha=3" in forget_chart.title and "alpha=2" in retain_chart.title
    removed = layer_chart.series[0][2]
    assert len(removed) == 14
    for value in removed:                                  # the same numbers the node's report prints
        assert f"forget energy removed {value:6.2%}" in report


def test_the_picture_is_an_image_tensor_and_grows_with_alpha(built, erase, spectrum):
    model, clip = built("SD1.x")
    images = []
    for alpha in (1.0, 50.0):
        patched, _ = erase(model, clip, "Van Gogh", "", alpha_forget=alpha)
        result = pack_module("nodes.erasure_spectrum").ErasureSpectrum.execute(patched, 640)
        tensor = result.result[0]
        assert tensor.dtype == torch.float32 and tensor.ndim == 4 and tensor.shape[0] == 1 and tensor.shape[-1] == 3
        assert tensor.shape[2] == 640 and 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
        images.append((tensor[0].numpy() * 255).round().astype(np.uint8))
    assert red_pixels(images[1]) > 1.2 * red_pixels(images[0])     # expanded spectrum bars are taller


def test_refusal_erasures_get_their_layer_chart_and_files_keep_the_figures(built, erase, spectrum, tiny, tmp_path):
    files = pack_module("comfy_glue.erasure_files")
    layout = pack_module("cure_core.erasure_file")
    refusal = pack_module("comfy_glue.refusal").erase_with_refusal
    model, clip = built("SD1.x")
    both, _ = refusal(erase(model, clip, "Van Gogh", "watercolor")[0], clip, PAIRS)
    erasures = pack_module("comfy_glue.patching").erasures_on(both)
    assert [len(spectrum.charts_for(e)[1]) for e in erasures] == [3, 1]
    direct = np.asarray(spectrum.draw_erasures(erasures))
    path = tmp_path / "both.safetensors"
    layout.save_erasure_file(path, files.erasure_file_of(both))
    applied, _ = files.apply_erasure_file(tiny.tiny_model("SD1.x"), layout.load_erasure_file(path))
    from_file = np.asarray(spectrum.draw_erasures(pack_module("comfy_glue.patching").erasures_on(applied)))
    assert np.array_equal(direct, from_file)
    with pytest.raises(ValueError, match="carries no erasure"):
        spectrum.draw_erasures([])


def test_layers_reading_different_rows_get_a_row_of_spectra_per_group(built, erase, spectrum):
    """HiDream: one eraser per group of caption projections that read the same rows, so one row of spectra each."""
    from cure_core.spectral import spectral_basis
    model, clip = built("HiDream")
    patched, _ = erase(model, clip, "Van Gogh", "Claude Monet")
    erasure = pack_module("comfy_glue.patching").erasures_on(patched)[0]
    _, charts = spectrum.charts_for(erasure)
    spectra = [c for c in charts if c.overlay]
    groups = ["llama hidden layer 0", "llama hidden layer 1", "llama hidden layer 3", "t5xxl"]
    assert sorted({c.group for c in spectra}) == groups and len(spectra) == 2 * len(groups)
    for chart in spectra:
        kind = "forget" if chart.title.startswith("Forget") else "retain"
        assert f"({chart.group})" in chart.title
        _, expected = spectral_basis(erasure.record.rows[f"{kind}@{chart.group}"].rows)   # no norm in HiDream
        energy = chart.series[0][2]
        assert energy == pytest.approx(expected.tolist()[:len(energy)], abs=1e-6)
    assert len(charts[-1].series[0][2]) == 5                   # the five caption projections
    image = spectrum.draw_erasures([erasure], chart_height=200)
    assert image.height == 28 + 200 * len(groups) + 200 + 12
