"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed). Each returns its path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)

STYLES = {
    "model": dict(color="tab:blue", linestyle="-", linewidth=2),
    "persistence": dict(color="tab:gray", linestyle="--"),
    "constant_velocity": dict(color="tab:orange", linestyle="--"),
    "copy_previous": dict(color="tab:gray", linestyle="--"),
}
ROLLOUT_PANELS = (
    ("position", "position MAE (game units)"),
    ("percent", "damage MAE (percent)"),
    ("action", "action accuracy"),
    ("on_ground", "on-ground accuracy"),
)


def _save(fig, path: Path) -> Path:
    from meleewm_core.store import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_rollout_errors(rollout, path: Path, *, title: str | None = None) -> Path:
    """Error (or accuracy) against rollout step, model against the baselines rolled out the same way."""
    fig, axes = plt.subplots(1, len(ROLLOUT_PANELS), figsize=(4.2 * len(ROLLOUT_PANELS), 3.6))
    for ax, (field, panel_title) in zip(axes, ROLLOUT_PANELS, strict=True):
        for who, values in rollout.fields.get(field, {}).items():
            ax.plot(rollout.steps, values, label=who.replace("_", " "), **STYLES[who])
        ax.set_title(panel_title)
        ax.set_xlabel("rollout step (frames)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        title or f"Rollout from {rollout.num_starts} validation starts, real controller inputs", y=1.03
    )
    return _save(fig, path)


def plot_trajectories(trace, path: Path, *, count: int = 4) -> Path:
    """Real against predicted x/y paths of both players for ``count`` rollouts spread over the starts."""
    total = trace.true_xy.shape[0]
    count = max(1, min(count, total))
    picks = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
    cols = min(len(picks), 2)
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for slot, index in enumerate(picks):
        ax = axes[slot // cols][slot % cols]
        for player, color in ((0, "tab:blue"), (1, "tab:red")):
            real = trace.true_xy[index, :, player]
            ax.plot(real[:, 0], real[:, 1], color=color, linewidth=2, label=f"P{player} real")
            ax.plot(
                trace.model_xy[index, :, player, 0],
                trace.model_xy[index, :, player, 1],
                color=color,
                linestyle="--",
                label=f"P{player} model",
            )
            ax.plot(
                trace.cv_xy[index, :, player, 0],
                trace.cv_xy[index, :, player, 1],
                color=color,
                linestyle=":",
                alpha=0.6,
                label=f"P{player} const. velocity",
            )
            ax.scatter(real[:1, 0], real[:1, 1], color=color, marker="o")
            invalid = (~trace.valid[index]).nonzero()[0]
            if len(invalid):
                ax.scatter(real[invalid[0], 0], real[invalid[0], 1], color="black", marker="x", s=60)
        start = trace.report.starts[index]
        ax.set_title(f"{start['md5'][:8]} frame row {start['row']}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.grid(alpha=0.3)
    for slot in range(len(picks), rows * cols):
        axes[slot // cols][slot % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_subsystems(subsystems: dict[str, dict[str, Any]], path: Path) -> Path:
    """One panel per subsystem: each metric as bars, model against persistence (and const. velocity)."""
    fig, axes = plt.subplots(1, len(subsystems), figsize=(4.2 * len(subsystems), 3.8), squeeze=False)
    for ax, (name, entry) in zip(axes[0], subsystems.items(), strict=True):
        metrics = {m: by for m, by in entry["metrics"].items() if "persistence" in by}
        labels = list(metrics)
        whos = [
            w
            for w in ("model", "persistence", "constant_velocity")
            if any(w in by for by in metrics.values())
        ]
        width = 0.8 / max(len(whos), 1)
        for i, who in enumerate(whos):
            values = [metrics[m].get(who, float("nan")) for m in labels]
            values = [0.0 if v != v else v for v in values]
            ax.bar(
                [j + i * width for j in range(len(labels))],
                values,
                width,
                label=who.replace("_", " "),
                color=STYLES[who]["color"],
            )
        ax.set_xticks([j + width * (len(whos) - 1) / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{name} ({int(entry['frames']):,} frames)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_policy(metrics: dict[str, float], path: Path) -> Path:
    """Policy errors and accuracies against copy-previous."""
    keys = ("stick_mae", "shoulder_mae", "button_acc", "button_f1", "button_press_recall")
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        values = [metrics.get(key, float("nan")), metrics.get(f"baseline/{key}", float("nan"))]
        ax.bar(
            ["policy", "copy prev."],
            [0.0 if v != v else v for v in values],
            color=[STYLES["model"]["color"], STYLES["copy_previous"]["color"]],
        )
        ax.set_title(key, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Imitation policy on validation games")
    return _save(fig, path)


def plot_simulation(columns: dict[str, Any], path: Path, *, title: str) -> Path:
    """Closed-loop simulation against the real game from the same start: x/y paths, x, percent over time."""
    steps = columns["step"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for player, color in ((0, "tab:blue"), (1, "tab:red")):
        for prefix, style in (
            ("real", dict(linestyle="-", alpha=0.5)),
            ("sim", dict(linestyle="--", linewidth=2)),
        ):
            label = f"P{player} {'simulated' if prefix == 'sim' else 'real'}"
            axes[0].plot(
                columns[f"{prefix}.p{player}.x"],
                columns[f"{prefix}.p{player}.y"],
                color=color,
                label=label,
                **style,
            )
            axes[1].plot(steps, columns[f"{prefix}.p{player}.x"], color=color, label=label, **style)
            axes[2].plot(steps, columns[f"{prefix}.p{player}.percent"], color=color, label=label, **style)
    for ax, (xlabel, ylabel) in zip(axes, (("x", "y"), ("frame", "x"), ("frame", "percent")), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
