"""Saving the report's figures so that nothing is cut off: the saved image grows to hold every title, label
and legend (matplotlib's tight bounding box, with a margin), whatever the figure size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
import matplotlib.pyplot as plt

#: Margin around everything drawn, in inches.
PAD_INCHES = 0.15


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> dict[str, Any]:
    """Save ``fig`` to ``path`` with its canvas grown to every artist, then close it. Returns the saved
    image's box and each title's box, in inches, in the figure's coordinates (what the tests check)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_inches = fig.dpi_scale_trans.inverted()
    image = fig.get_tightbbox(renderer).padded(PAD_INCHES)
    titles = [fig._suptitle] if getattr(fig, "_suptitle", None) is not None else []
    titles += [ax.title for ax in fig.axes if ax.get_title()]
    boxes = [t.get_window_extent(renderer).transformed(to_inches) for t in titles if t.get_text()]
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=PAD_INCHES)
    plt.close(fig)
    return {"image": tuple(image.bounds), "titles": [tuple(b.bounds) for b in boxes]}
