"""The validation report's plots: PNG files drawn with matplotlib, no numbers of their own.

Every value drawn is one :mod:`earshot.validation.report` also writes to
``metrics.json``; this module only draws them (and is left out of ``make mutate``,
which is for the numbers and the verdict, not for the drawing).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from earshot.validation.report import Run

PLOTS = {
    "network_latency.png": "latency per network profile: first text and final transcript",
    "wer_per_clip.png": "word error rate per clip, at real time",
    "text_lag.png": "text lag over time, each concurrent stream",
}


def draw(run: Run, folder: Path) -> None:
    """The three PNG plots (an empty phase gets a plot that says so)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    profiles = list(dict.fromkeys(s.profile for s in run.network))
    for ax, (label, metric) in zip(axes, (("first audio to first text (s)", "first_text_s"),
                                          ("END_OF_AUDIO to final (s)", "final_s")),
                                   strict=True):
        data = [[getattr(s, metric) for s in run.network
                 if s.profile == p and getattr(s, metric) is not None] for p in profiles]
        if any(data):
            ax.boxplot(data, tick_labels=profiles, showmeans=True)
            for i, values in enumerate(data, start=1):
                ax.scatter([i] * len(values), values, s=12, color="tab:blue", zorder=3)
        else:
            ax.text(0.5, 0.5, "no network phase", ha="center", transform=ax.transAxes)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(PLOTS["network_latency.png"])
    save(fig, "network_latency.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [s.clip for s in run.clips]
    bars = ax.bar(names, [s.wer or 0 for s in run.clips], color="tab:green")
    ax.bar_label(bars, labels=[f"{s.wer:.3f}" if s.ok and s.wer is not None else "failed"
                               for s in run.clips])
    ax.axhline(run.thresholds["clips.max_wer"], color="tab:red", linestyle="--",
               label="threshold")
    ax.margins(y=0.15)  # room for the value labels
    ax.set_ylabel("WER")
    ax.set_title(PLOTS["wer_per_clip.png"])
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend()
    save(fig, "wer_per_clip.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, s in enumerate(run.concurrency):
        series = s.lag_series()
        if series:
            ax.plot([a for a, _ in series], [b for _, b in series], marker=".",
                    label=f"stream {i} ({s.clip})")
    ax.axhline(run.thresholds["concurrency.max_lag_s"], color="tab:red", linestyle="--",
               label="threshold")
    ax.set_xlabel("seconds since the stream's first audio")
    ax.set_ylabel("text lag (s)")
    ax.set_title(PLOTS["text_lag.png"])
    ax.legend(fontsize="small")
    save(fig, "text_lag.png")
