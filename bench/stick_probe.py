"""Can a small MLP learn Melee's controller-driven action changes from the encoded sticks?

    python bench/stick_probe.py RUN_DIR --data /tmp/benchroot [--epochs 1]

Uses the training games of RUN_DIR (any run whose encoding has ``action_age_as_embed``) and prints
first how deterministic three transitions are in them (jump pressed in Wait, Dash or shield ->
jump squat; main stick smashed from neutral in Wait -> Dash toward the facing side, Turn away),
then trains the same probe twice on every player-frame: last action and action-age embeddings,
last and next controller, facing and on_ground -> next action (one hidden layer of 128, AdamW
2e-3, batch 1024), once on the raw sticks (0.5 at neutral) and once with each stick's deflection
and push toward the facing side added (``models.mlp.stick_features``), and prints the recall of
the frequent transitions for both. The gap is why ``model.transition_head`` gets those features.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.encoding import CONTROLLER_FIELDS, NUM_PLAYERS, STICK_FIELDS  # noqa: E402
from meleewm_core.eval import load_run, open_val_data, val_arrays  # noqa: E402
from meleewm_core.models.mlp import stick_features  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402

WAIT, TURN, DASH, RUN, JUMP_SQUAT, JUMP_FORWARD, JUMP_BACK, FALL, LANDING, SHIELD = (
    14, 18, 20, 21, 24, 25, 26, 29, 42, 179,
)  # fmt: skip
REPORTED = ((WAIT, DASH), (WAIT, TURN), (WAIT, JUMP_SQUAT), (JUMP_SQUAT, JUMP_FORWARD), (JUMP_SQUAT, JUMP_BACK),
            (DASH, RUN), (FALL, LANDING))  # fmt: skip


def player_frames(floats: np.ndarray, ints: np.ndarray, games, spec) -> dict[str, torch.Tensor]:
    """Every (last frame, frame) pair of both players inside a game, as tensors."""
    inside = np.ones(len(floats), dtype=bool)
    inside[[first for _, first, _ in games]] = False
    rows = np.nonzero(inside)[0]
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("last_ctrl", "ctrl", "state", "last", "age", "next")
    }
    for p in range(NUM_PLAYERS):
        ctrl = [spec.float_col(p, name) for name in CONTROLLER_FIELDS]
        parts["last_ctrl"].append(floats[rows - 1][:, ctrl])
        parts["ctrl"].append(floats[rows][:, ctrl])
        parts["state"].append(floats[rows - 1][:, [spec.float_col(p, n) for n in ("facing", "on_ground")]])
        parts["last"].append(ints[rows - 1, spec.int_col(p, "action")])
        parts["age"].append(ints[rows - 1, spec.int_col(p, "action_age")])
        parts["next"].append(ints[rows, spec.int_col(p, "action")])
    return {k: torch.as_tensor(np.concatenate(v)) for k, v in parts.items()}


def print_rules(frames: dict[str, torch.Tensor]) -> None:
    last, nxt, facing = frames["last"], frames["next"], frames["state"][:, 0]
    jump = CONTROLLER_FIELDS.index("X"), CONTROLLER_FIELDS.index("Y")
    pressed = (frames["ctrl"][:, list(jump)] > 0.5).any(1) & ~(frames["last_ctrl"][:, list(jump)] > 0.5).any(
        1
    )
    jumped = torch.isin(last, torch.tensor([WAIT, DASH, SHIELD])) & pressed
    print(
        f"jump pressed in Wait, Dash or shield -> jump squat: {int((nxt[jumped] == JUMP_SQUAT).sum())} of {int(jumped.sum())}"
    )
    x = CONTROLLER_FIELDS.index("main_x")
    smashed = (
        (last == WAIT)
        & ((frames["ctrl"][:, x] - 0.5).abs() > 0.4)
        & ((frames["last_ctrl"][:, x] - 0.5).abs() < 0.15)
    )
    toward = (frames["ctrl"][:, x] > 0.5) == (facing > 0.5)
    for name, mask, target in (
        ("Dash (toward the facing side)", smashed & toward, DASH),
        ("Turn (away)", smashed & ~toward, TURN),
    ):
        print(
            f"main stick smashed from neutral in Wait -> {name}: {int((nxt[mask] == target).sum())} of {int(mask.sum())}"
        )


def train_probe(
    inputs: torch.Tensor, frames: dict[str, torch.Tensor], vocab: int, epochs: int
) -> torch.Tensor:
    """Train the probe on every pair; returns its predicted next action for each."""
    torch.manual_seed(0)
    action = nn.Embedding(vocab, 32)
    age = nn.Embedding(int(frames["age"].max()) + 1, 8)
    mlp = nn.Sequential(nn.Linear(inputs.shape[1] + 40, 128), nn.ReLU(), nn.Linear(128, vocab))
    params = [*action.parameters(), *age.parameters(), *mlp.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3)

    def logits(index: torch.Tensor) -> torch.Tensor:
        return mlp(
            torch.cat(
                [inputs[index], action(frames["last"][index].long()), age(frames["age"][index].long())], 1
            )
        )

    for _ in range(epochs):
        for batch in torch.randperm(len(inputs)).split(1024):
            loss = nn.functional.cross_entropy(logits(batch), frames["next"][batch].long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return torch.cat([logits(index).argmax(1) for index in torch.arange(len(inputs)).split(65536)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="data root holding the run's shards (default $MELEEWM_DATA)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    run = load_run(args.run_dir, "cpu")
    spec = run.layout.spec
    training = run.manifest["game_md5s"]["train"]
    floats, ints, games = val_arrays(open_val_data(run, DataRoot.from_env(args.data), training))
    frames = player_frames(floats, ints, games, spec)
    print(f"{len(frames['next'])} player-frames of {len(games)} training games")
    print_rules(frames)

    raw = torch.cat([frames["last_ctrl"], frames["ctrl"], frames["state"]], 1)
    sticks = [CONTROLLER_FIELDS.index(name) for name in STICK_FIELDS]
    featured = torch.cat(
        [
            raw,
            stick_features(frames["last_ctrl"][:, sticks], frames["ctrl"][:, sticks], frames["state"][:, 0]),
        ],
        1,
    )
    last, nxt = frames["last"], frames["next"]
    for name, inputs in (("raw sticks", raw), ("with stick features", featured)):
        guess = train_probe(inputs, frames, spec.vocab("action"), args.epochs)
        changed = last != nxt
        print(
            f"probe, {name}, {args.epochs} epoch(s): action-change accuracy {(guess == nxt)[changed].float().mean():.3f}"
        )
        for before, after in REPORTED:
            mask = (last == before) & (nxt == after)
            print(f"  {before:>3} -> {after:<3} {int((guess[mask] == after).sum()):>5} of {int(mask.sum())}")


if __name__ == "__main__":
    main()
