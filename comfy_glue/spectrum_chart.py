"""What the **Erasure Spectrum** node draws: a picture of what an erasure did, with Pillow (no matplotlib).

For each CURE erasure on the MODEL: the energy shares ``r_i`` of the forget and retain sets and the
expanded shares ``f(r_i; α)`` the projectors use, then per edited layer the share of the forget
rows' output energy removed and how far retained outputs moved. All figures are the ones the erase
node computed (kept on its patches, and in erasure files), not recomputed here. Where the layers
read different encoder rows (HiDream, Hunyuan-DiT: one eraser per group of layers), each group's
spectra get a row of their own, named after the rows the group reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..cure_core.erasure_file import CURE_METHOD, Erasure, row_set_name, split_row_set_name
from ..cure_core.spectral import PER_CONCEPT
from ..cure_core.unlearning import METHOD as FINETUNE_METHOD
from .patching import erasures_on

MAX_BARS = 48                      # components shown per spectrum (the strongest ones)
BACKGROUND, INK, GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
FORGET, RETAIN, MOVED = (205, 60, 50), (50, 110, 200), (120, 120, 120)


@dataclass(frozen=True)
class Chart:
    """One bar chart: ``series`` are ``(label, colour, values)``, drawn side by side per position."""
    title: str
    series: tuple[tuple[str, tuple[int, int, int], tuple[float, ...]], ...]
    overlay: bool = False           # True: two series, the first drawn as a tick over the second's bars
    note: str = ""
    group: str | None = None        # the group of layers a spectrum belongs to (None: all the edited layers)


def charts_for(erasure: Erasure) -> tuple[str, list[Chart]]:
    """The heading and charts for one erasure."""
    recipe = erasure.record.recipe
    charts = []
    spectra = erasure.record.spectra
    groups = dict.fromkeys(split_row_set_name(name)[1] for name in spectra)     # in the order they were built
    per_concept = recipe.get("combination") == PER_CONCEPT     # spectra of every concept's own rows, strongest first
    for group in groups:
        for name, colour, alpha in (("forget", FORGET, recipe.get("alpha_forget")),
                                    ("retain", RETAIN, recipe.get("alpha_retain"))):
            if row_set_name(f"{name}_energy", group) not in spectra:
                continue
            energy = spectra[row_set_name(f"{name}_energy", group)].float().tolist()
            gains = spectra[row_set_name(f"{name}_gains", group)].float().tolist()
            shown = min(len(energy), MAX_BARS)
            note = (f"strongest {shown} of {len(energy)} components" if shown < len(energy)
                    else f"{len(energy)} components")
            where = "" if group is None else f" ({group})"
            shares = "each concept's energy shares r" if per_concept else "energy share r"
            charts.append(Chart(f"{name.capitalize()} set{where}: {shares} and expanded f(r; alpha={alpha})",
                                (("r", INK, tuple(energy[:shown])), (f"f(r; {alpha})", colour, tuple(gains[:shown]))),
                                overlay=True, note=note, group=group))
    keys = list(erasure.record.figures)
    figures = [erasure.record.figures[k] for k in keys]
    cure = recipe.get("method") == CURE_METHOD
    removed, moved = (("forget energy removed", "retained outputs moved") if cure else
                      ("concept effect removed", "neutral outputs moved"))
    series = [(removed, FORGET, tuple(max(f.forget_removed, 0.0) for f in figures))]
    if recipe.get("method") == FINETUNE_METHOD:        # a learned change: nothing measured on concept rows
        series = [("weight change |dW|/|W|", FORGET, tuple(f.weight_change for f in figures))]
    if figures and all(f.retain_change is not None for f in figures):
        series.append((moved, MOVED, tuple(f.retain_change for f in figures)))
    if figures:
        charts.append(Chart(f"Per edited layer (1 = {_short(keys[0])} ... {len(keys)} = {_short(keys[-1])})",
                            tuple(series), note=f"at full strength; applied at {erasure.strength:g}"))
    what = recipe.get("forget") or recipe.get("pairs", "")
    heading = f"{recipe.get('method', 'erasure')} on {recipe.get('family', '?')}: " + what.replace("\n", ", ")
    if recipe.get("retain"):
        heading += "  |  retain: " + recipe["retain"].replace("\n", ", ")
    return heading, charts


def _short(key: str) -> str:
    return key.removeprefix("diffusion_model.").removesuffix(".weight")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:              # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _draw_chart(draw: ImageDraw.ImageDraw, chart: Chart, box: tuple[int, int, int, int], font, small) -> None:
    left, top, right, bottom = box
    draw.text((left, top), _fit(draw, chart.title, font, right - left), fill=INK, font=font)
    legend_y = top + 18
    x = left
    for label, colour, _ in chart.series:
        draw.rectangle((x, legend_y + 3, x + 10, legend_y + 11), fill=colour)
        draw.text((x + 14, legend_y), label, fill=INK, font=small)
        x += 24 + int(draw.textlength(label, font=small))
    if chart.note:
        draw.text((x + 8, legend_y), chart.note, fill=MOVED, font=small)
    plot_left, plot_top, plot_right, plot_bottom = left + 34, top + 40, right - 6, bottom - 18
    peak = max([1.0] + [v for _, _, values in chart.series for v in values])
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = plot_bottom - fraction * (plot_bottom - plot_top)
        draw.line((plot_left, y, plot_right, y), fill=GRID)
        draw.text((left, y - 7), f"{fraction * peak:.2g}", fill=INK, font=small)
    count = max(len(values) for _, _, values in chart.series)
    slot = (plot_right - plot_left) / max(count, 1)
    bars = chart.series[1:] if chart.overlay else chart.series
    lanes = len(bars)
    for s, (_, colour, values) in enumerate(bars):
        for i, value in enumerate(values):
            x0 = plot_left + (i + 0.1) * slot + s * 0.8 * slot / lanes
            height = value / peak * (plot_bottom - plot_top)
            draw.rectangle((x0, plot_bottom - height, x0 + max(0.8 * slot / lanes, 1.0) - 1, plot_bottom), fill=colour)
    if chart.overlay:                               # the raw share as a tick across its expanded bar
        _, colour, values = chart.series[0]
        for i, value in enumerate(values):
            y = plot_bottom - value / peak * (plot_bottom - plot_top)
            draw.line((plot_left + (i + 0.05) * slot, y, plot_left + (i + 0.95) * slot, y), fill=colour, width=2)
    for i in range(count):
        if count <= 40 or i in (0, count - 1) or (i + 1) % 10 == 0:
            draw.text((plot_left + (i + 0.5) * slot - 4, plot_bottom + 2), str(i + 1), fill=INK, font=small)


def draw_erasures(erasures: list[Erasure], width: int = 960, chart_height: int = 230) -> Image.Image:
    """One block per erasure: a heading, the forget and retain spectra side by side (a row per group of layers
    that read the same rows), the per-layer chart."""
    if not erasures:
        raise ValueError("This MODEL carries no erasure: connect the model output of an erase node "
                         "(or of Apply Erasure File / Combine Erasure Files).")
    blocks = [charts_for(e) for e in erasures]
    heights = []
    for _, charts in blocks:
        spectra = [c for c in charts if c.overlay]
        groups = len({c.group for c in spectra})
        heights.append(28 + chart_height * groups + chart_height * (len(charts) - len(spectra)) + 12)
    image = Image.new("RGB", (width, sum(heights)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(11)
    top = 0
    for (heading, charts), height in zip(blocks, heights):
        draw.text((8, top + 6), _fit(draw, heading, font, width - 16), fill=INK, font=font)
        y = top + 28
        for group in dict.fromkeys(c.group for c in charts if c.overlay):
            row = [c for c in charts if c.overlay and c.group == group]
            span = (width - 16) // len(row)
            for i, chart in enumerate(row):
                _draw_chart(draw, chart, (8 + i * span, y, 8 + (i + 1) * span - 12, y + chart_height - 8), font,
                            small)
            y += chart_height
        for chart in (c for c in charts if not c.overlay):
            _draw_chart(draw, chart, (8, y, width - 8, y + chart_height - 8), font, small)
            y += chart_height
        top += height
        draw.line((0, top - 4, width, top - 4), fill=GRID)
    return image


def image_tensor(image: Image.Image) -> torch.Tensor:
    """ComfyUI's IMAGE: ``[1, H, W, 3]`` float32 in 0..1."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def spectrum_image(model, width: int = 960) -> torch.Tensor:
    """The picture of every erasure on ``model``, as ComfyUI's IMAGE."""
    return image_tensor(draw_erasures(erasures_on(model), width))
