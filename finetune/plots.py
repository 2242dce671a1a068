"""The loss-curve PNG attached to a finished job (matplotlib with the Agg backend: no display)."""

from __future__ import annotations

from pathlib import Path

from finetune.events import ProgressEvent


def loss_curve(events: list[ProgressEvent], out: Path, *, title: str = "Training loss") -> Path | None:
    """Plot loss against step; returns None when there is nothing to plot."""
    points = [(e.step, e.loss) for e in events if e.kind == "step" and e.loss is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 60 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
