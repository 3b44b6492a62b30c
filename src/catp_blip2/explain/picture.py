"""The picture of an explanation: the image on its patch grid and one heatmap per query, the kept ones framed."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

# The frame round kept queries: red reads well on every colour of the viridis heatmaps.
KEPT_COLOR = "#e6194b"


def draw_explanation(explanation: Any, image: Any, out: str | Path) -> Path:
    """Write the PNG of an `explanation.Explanation` (typed loosely: that module imports this one): the image with
    its patch grid, then one heatmap per query (one colour scale for all, so panels compare), titled with its vote
    share, the kept ones framed. Returns the path written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI backend picked up from the environment
    import matplotlib.pyplot as plt

    maps = explanation.maps
    num_queries, grid = maps.shape[0], maps.shape[1]
    cols = min(8, num_queries)
    rows = -(-num_queries // cols)
    kept = set(explanation.kept)
    figure = plt.figure(figsize=(3.4 + 1.3 * cols, 1.5 + 1.45 * rows), layout="constrained")
    try:
        outer = figure.add_gridspec(1, 2, width_ratios=[3.0, 1.3 * cols])
        image_axes = figure.add_subplot(outer[0])
        # The processor resizes to a square: stretched onto the patch grid, each cell is what one image token saw.
        half = grid - 0.5
        image_axes.imshow(image, extent=(-0.5, half, half, -0.5), interpolation="nearest")
        for line in np.arange(0.5, grid - 1):
            image_axes.axhline(line, color="white", linewidth=0.8, alpha=0.7)
            image_axes.axvline(line, color="white", linewidth=0.8, alpha=0.7)
        image_axes.set_xticks([])
        image_axes.set_yticks([])
        image_axes.set_title(f"image ({grid}x{grid} patches)", fontsize=9)

        panels = outer[1].subgridspec(rows, cols)
        top = float(maps.max()) or 1.0
        heat = None
        panel_axes = []
        for q in range(num_queries):
            axes = figure.add_subplot(panels[q // cols, q % cols])
            panel_axes.append(axes)
            heat = axes.imshow(maps[q], cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            chosen = q in kept
            for spine in axes.spines.values():
                spine.set_edgecolor(KEPT_COLOR if chosen else "#bbbbbb")
                spine.set_linewidth(4.0 if chosen else 0.6)
            axes.set_title(
                f"q{q}  {100 * explanation.shares[q]:.1f}%", fontsize=8,
                color=KEPT_COLOR if chosen else "black", fontweight="bold" if chosen else "normal",
            )
        figure.colorbar(heat, ax=panel_axes, shrink=0.6, label="cross-attention (mean over heads, voting layers)")
        layers = ", ".join(str(p) for p in explanation.layers)
        heading = textwrap.shorten(f"Q: {explanation.question}", 110) + f"    answer: {explanation.answer!r}"
        figure.suptitle(
            f"{heading}\nmethod {explanation.method}, k = {explanation.k} of {num_queries} query tokens kept "
            f"(framed); % = share of the method's votes; maps from cross-attention layer(s) {layers}",
            fontsize=10,
        )
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


__all__ = ["KEPT_COLOR", "draw_explanation"]
