"""Closed loop: a full-state world model and the imitation policy play each other from a real start.

From K real frames of a validation game, each step the policy reads the context and chooses both
players' next controllers (sticks and shoulder as predicted; buttons sampled from the predicted
probabilities with a seeded generator, or thresholded at 0.5 with ``sample_buttons=False``), the
world model predicts the next frame from the context and those controllers, and the frame becomes
the newest context frame. Nothing real enters after the start, so this shows what the two models
have learned together: whether characters keep to the stage, fall, move when the sticks move, take
damage when hit, lose stocks. The real game from the same start is written beside it for
comparison (it diverges at once: the policy is not the players).

Where it breaks, by construction: errors compound (there is no real frame to pull it back), a
deterministic policy tends to copy its last controller for ever, and anything the encoding does
not hold (items, projectiles, stage hazards, Nana) does not exist in the simulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from meleewm_core.encoding import CONTROLLER_FIELDS, DEATH_ACTIONS, NUM_PLAYERS
from meleewm_core.eval import EvalError, load_run, open_val_data, val_arrays
from meleewm_core.models import next_frame
from meleewm_core.policy import controller_row, predicted_controllers

# Per-player fields written to the trajectory (continuous in game units).
TRAJECTORY_FIELDS = ("x", "y", "percent", "shield", "stocks")


class SimulationResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    world_run: Path
    policy_run: Path
    game_md5: str
    start_row: int
    frames: int
    trajectory: Path
    plot: Path
    first_predicted_death: int | None  # simulated frame where a player first enters a death action
    left_stage_x: float  # largest |x| reached by either simulated player
    lowest_percent: float  # below 0 means the model let damage go negative


def _start(games, context_len: int, frames: int, game: str | None, row: int | None):
    """(md5, first row, frames of that game, start row): default the first val game, row 600 if possible."""
    pick = next((g for g in games if game is None or g[0].startswith(game)), None)
    if pick is None:
        raise EvalError(f"game {game!r} is not among the run's validation games {[g[0] for g in games]}")
    md5, first, num_frames = pick
    start = row if row is not None else min(600, max(context_len, num_frames - frames))
    if not context_len <= start < num_frames:
        raise EvalError(f"start row {start} outside {context_len}..{num_frames - 1} of game {md5}")
    return md5, first, num_frames, start


@torch.no_grad()
def simulate(
    world_run_dir: str | Path,
    policy_run_dir: str | Path,
    root,
    *,
    frames: int = 600,
    game: str | None = None,
    start_row: int | None = None,
    sample_buttons: bool = True,
    seed: int = 0,
    device: str = "auto",
    out_dir: str | Path | None = None,
) -> SimulationResult:
    """Run the closed loop for ``frames`` frames; write
    ``simulate/<policy-run>-<game>-<row>-<sampled<seed>|greedy>.{parquet,png}`` under the world run."""
    import pyarrow as pa

    from meleewm_core.plots import plot_simulation
    from meleewm_core.store import write_parquet_atomic

    world = load_run(world_run_dir, device)
    policy = load_run(policy_run_dir, world.device)
    if world.is_policy or world.experiment.model.heads != "full_state":
        raise EvalError(
            f"{world.run_dir}: simulate needs a world model with full_state heads (model.heads: full_state, e.g. "
            f"experiments/exp-3a-full-state.yaml); a v22 model cannot predict velocities, hitlag or stocks, "
            f"so the loop cannot close"
        )
    if not policy.is_policy:
        raise EvalError(f"{policy.run_dir}: not a policy run (train one with `meleewm train-policy`)")
    if policy.experiment.encoding != world.experiment.encoding:
        raise EvalError(
            f"{policy.run_dir}: the policy's encoding config differs from the world model's "
            f"({world.run_dir}); train both with the same encoding"
        )
    spec, layout = world.spec, world.layout
    k_world, k_policy = world.experiment.model.context_len, policy.experiment.model.context_len
    history_len = max(k_world, k_policy)

    floats_np, ints_np, games = val_arrays(open_val_data(world, root))
    md5, first, num_frames, start = _start(games, history_len, frames, game, start_row)
    hist_f = torch.from_numpy(floats_np[first + start - history_len : first + start]).to(world.device)[None]
    hist_i = (
        torch.from_numpy(ints_np[first + start - history_len : first + start]).to(world.device).long()[None]
    )
    generator = torch.Generator(device=world.device).manual_seed(seed)
    button_cols = torch.tensor(spec.button_cols, device=world.device)

    rows_f, rows_i = [], []
    for _ in range(frames):
        policy_out = policy.model(hist_f[:, -k_policy:], hist_i[:, -k_policy:])
        analog, probs = predicted_controllers(policy_out, hist_f[:, -1], spec)
        buttons = torch.bernoulli(probs, generator=generator) if sample_buttons else (probs > 0.5).float()
        next_ctrl = controller_row(analog, buttons, spec)
        if spec.config.press_events:
            before = hist_f[:, -1].index_select(1, button_cols) < 0.5
            next_ctrl = torch.cat([next_ctrl, ((buttons > 0.5) & before).float()], dim=1)
        outputs = world.model(hist_f[:, -k_world:], hist_i[:, -k_world:], next_ctrl)
        new_f, new_i = next_frame(
            {k: v.float() for k, v in outputs.items()}, hist_f[:, -1], hist_i[:, -1], next_ctrl, layout
        )
        rows_f.append(new_f[0].cpu().numpy())
        rows_i.append(new_i[0].cpu().numpy())
        hist_f = torch.cat([hist_f[:, 1:], new_f[:, None]], dim=1)
        hist_i = torch.cat([hist_i[:, 1:], new_i[:, None]], dim=1)

    sim_f, sim_i = np.stack(rows_f), np.stack(rows_i)
    real_end = min(first + num_frames, first + start + frames)
    real_f, real_i = floats_np[first + start : real_end], ints_np[first + start : real_end]
    columns: dict[str, object] = {"step": np.arange(1, frames + 1, dtype=np.int32)}
    for prefix, fl, it in (("sim", sim_f, sim_i), ("real", real_f, real_i)):
        for p in range(NUM_PLAYERS):
            for name in TRAJECTORY_FIELDS:
                values = fl[:, spec.float_col(p, name)] / spec.scale(name)
                columns[f"{prefix}.p{p}.{name}"] = _pad(values.astype(np.float32), frames)
            columns[f"{prefix}.p{p}.action"] = _pad(
                it[:, spec.int_col(p, "action")].astype(np.float32), frames
            )
            columns[f"{prefix}.p{p}.on_ground"] = _pad(fl[:, spec.float_col(p, "on_ground")], frames)
    for p in range(NUM_PLAYERS):
        for name in CONTROLLER_FIELDS:
            columns[f"sim.p{p}.{name}"] = sim_f[:, spec.float_col(p, name)].astype(np.float32)
    table = pa.table({k: pa.array(v, from_pandas=True) for k, v in columns.items()})

    out = Path(out_dir) if out_dir else world.run_dir / "simulate"
    buttons_mode = f"sampled{seed}" if sample_buttons else "greedy"
    stem = f"{policy.run_dir.name}-{md5[:8]}-{start}-{buttons_mode}"
    write_parquet_atomic(table, out / f"{stem}.parquet")
    plot = plot_simulation(
        columns,
        out / f"{stem}.png",
        title=f"{world.experiment.name} + {policy.experiment.name}, game {md5[:8]} from row {start}",
    )

    dead = np.isin(
        sim_i[:, [spec.int_col(p, "action") for p in range(NUM_PLAYERS)]], list(DEATH_ACTIONS)
    ).any(1)
    xs = np.abs(sim_f[:, [spec.float_col(p, "x") for p in range(NUM_PLAYERS)]] / spec.scale("x"))
    return SimulationResult(
        world_run=world.run_dir,
        policy_run=policy.run_dir,
        game_md5=md5,
        start_row=start,
        frames=frames,
        trajectory=out / f"{stem}.parquet",
        plot=plot,
        first_predicted_death=int(dead.nonzero()[0][0]) + 1 if dead.any() else None,
        left_stage_x=float(xs.max()),
        lowest_percent=float(
            (
                sim_f[:, [spec.float_col(p, "percent") for p in range(NUM_PLAYERS)]] / spec.scale("percent")
            ).min()
        ),
    )


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    """Real frames stop at the game's end; pad with NaN (null in the parquet) to the simulated length."""
    out = np.full(length, np.nan, dtype=np.float32)
    out[: len(values)] = values
    return out
