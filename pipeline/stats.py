"""Dataset statistics of the encoded targets: what CenterNet can and cannot represent.

Per sample (image view): radii drawn, objects, center collisions (two same-class objects whose
centers fall on one output pixel, the paper's stated drawback), objects dropped by ``max_objs``
and boxes that vanish after cropping. Kept as JSON-able dicts so chunks merge in the driver.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from centernet.targets import EncodeStats


class TargetStats:
    """Accumulates :class:`centernet.targets.EncodeStats` over samples."""

    def __init__(self) -> None:
        self.samples = 0
        self.objects = 0
        self.radii: Counter = Counter()
        self.objects_per_image: Counter = Counter()
        self.collisions = 0
        self.samples_with_collisions = 0
        self.truncated = 0
        self.samples_truncated = 0
        self.degenerate = 0

    def add(self, num_objects: int, stats: EncodeStats, *, first_view: bool) -> None:
        """One sample with ``num_objects`` boxes passed to ``encode``; objects/image counted on view 0."""
        self.samples += 1
        self.objects += int(num_objects)
        self.radii.update(int(r) for r in np.asarray(stats.radii).tolist())
        if first_view:
            self.objects_per_image[int(num_objects)] += 1
        self.collisions += stats.collisions
        self.samples_with_collisions += int(stats.collisions > 0)
        self.truncated += stats.truncated
        self.samples_truncated += int(stats.truncated > 0)
        self.degenerate += stats.degenerate

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "objects": self.objects,
            "radius_histogram": {str(k): v for k, v in sorted(self.radii.items())},
            "objects_per_image_histogram": {str(k): v for k, v in sorted(self.objects_per_image.items())},
            "center_collisions": self.collisions,
            "samples_with_collisions": self.samples_with_collisions,
            "truncated_objects": self.truncated,
            "samples_truncated": self.samples_truncated,
            "degenerate_objects": self.degenerate,
        }


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum :meth:`TargetStats.to_dict` results of several chunks (histograms bin-wise)."""
    total: dict[str, Any] = TargetStats().to_dict()
    hist_keys = ("radius_histogram", "objects_per_image_histogram")
    hists = {k: Counter() for k in hist_keys}
    for part in parts:
        for key, value in part.items():
            if key in hist_keys:
                hists[key].update({int(b): int(c) for b, c in value.items()})
            else:
                total[key] += int(value)
    for key in hist_keys:
        total[key] = {str(b): c for b, c in sorted(hists[key].items())}
    objects = max(total["objects"], 1)
    total["collision_fraction"] = total["center_collisions"] / objects
    total["truncated_fraction"] = total["truncated_objects"] / objects
    return total


def summary_line(stats: dict[str, Any]) -> str:
    """One human line: how much of the data the encoding cannot represent."""
    return (f"{stats['samples']} samples, {stats['objects']} objects; center collisions "
            f"{stats['center_collisions']} ({100 * stats.get('collision_fraction', 0):.2f}% of objects, "
            f"in {stats['samples_with_collisions']} samples); truncated by max_objs "
            f"{stats['truncated_objects']}; cropped away {stats['degenerate_objects']}")


def plot_stats(stats: dict[str, Any], title: str = "") -> bytes:
    """PNG bytes: radius histogram, objects per image, and unrepresentable objects (Agg backend)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), dpi=90)
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    radii = {int(k): v for k, v in stats["radius_histogram"].items()}
    ax1.bar(list(radii), list(radii.values()), width=0.9, color="tab:blue")
    ax1.set(title="Gaussian radius (output px)", xlabel="radius", ylabel="objects")
    per_image = {int(k): v for k, v in stats["objects_per_image_histogram"].items()}
    ax2.bar(list(per_image), list(per_image.values()), width=0.9, color="tab:green")
    ax2.set(title="objects per image", xlabel="objects", ylabel="images")
    labels = ["center\ncollisions", "truncated\n(max_objs)", "cropped\naway"]
    values = [stats["center_collisions"], stats["truncated_objects"], stats["degenerate_objects"]]
    bars = ax3.bar(labels, values, color=["tab:red", "tab:orange", "tab:gray"])
    ax3.bar_label(bars)
    ax3.set(title=f"not representable (of {stats['objects']} objects)", ylabel="objects")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.82, wspace=0.3)  # fixed: fast
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
