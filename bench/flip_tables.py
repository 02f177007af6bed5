"""One step ahead, how well each binary is called by a run's heads, by flip tables and by persistence.

    python bench/flip_tables.py RUN_DIR --data /tmp/benchroot

Measures ``model.binary_flip_tables``' tables on the run's training games and scores, on every
window of its validation games, each binary (facing, invulnerable, on_ground) as the run predicts
it, as the tables predict it from the run's predicted action and state_age (what the option does,
bolted onto any full_state run with ``encoding.state_age_as_embed``), as the tables would from the
real next action and state_age (their ceiling), and as persistence (the last frame's value). One
JSON line of accuracies per binary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.data import WindowColumns, gather_batch  # noqa: E402
from meleewm_core.encoding import BINARY_FIELDS, NUM_PLAYERS  # noqa: E402
from meleewm_core.eval import load_run, open_val_data  # noqa: E402
from meleewm_core.models import build_model  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402
from meleewm_core.train import binary_flip_tables  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="data root holding the run's shards (default $MELEEWM_DATA)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    run = load_run(args.run_dir, args.device)
    root = DataRoot.from_env(args.data)
    spec, layout, context_len = run.layout.spec, run.layout, run.experiment.model.context_len
    tabled = build_model(
        run.experiment.encoding, run.experiment.model.model_copy(update={"binary_flip_tables": True})
    )
    tabled.load_state_dict(run.model.state_dict(), strict=False)
    train = open_val_data(run, root, run.manifest["game_md5s"]["train"])
    train = replace(train, games=[replace(game, split="train") for game in train.games])
    tabled.calibrate_flip_tables(*binary_flip_tables(train, tabled.flips_on_stay.shape[2]))
    tabled = tabled.to(run.device).eval()

    val = open_val_data(run, root)
    floats, ints = val.tensors(run.device)
    cols = WindowColumns(spec, context_len, run.device)
    rows = torch.from_numpy(np.concatenate(val.targets("val", context_len))).to(run.device)
    hits: Counter[tuple[str, str]] = Counter()
    with torch.no_grad():
        for chunk in rows.split(4096):
            batch = gather_batch(floats, ints, chunk, cols)
            own = run.model(batch.float_ctx, batch.int_ctx, batch.next_ctrl)
            outputs = tabled(batch.float_ctx, batch.int_ctx, batch.next_ctrl)
            # The tables' ceiling: the same lookup given the real next action and state_age.
            real = {}
            for p in range(NUM_PLAYERS):
                for name in ("action", "state_age"):
                    target = batch.int_tgt[:, spec.int_col(p, name)]
                    real[f"p{p}_{name}_logits"] = torch.nn.functional.one_hot(
                        target, spec.vocab(name)
                    ).float()
            ceiling = tabled.flip_table_binary_logits(real, batch.float_ctx[:, -1], batch.int_ctx[:, -1])
            for i, col in enumerate(layout.binary_cols):
                name = BINARY_FIELDS[i % len(BINARY_FIELDS)]
                truth = batch.float_tgt[:, col] > 0.5
                for who, guess in (
                    ("persistence", batch.float_ctx[:, -1, col] > 0.5),
                    ("heads", own["binary_logits"][:, i] > 0),
                    ("tables", outputs["binary_logits"][:, i] > 0),
                    ("tables_real_action", ceiling[:, i] > 0),
                ):
                    hits[(name, who)] += (guess == truth).sum().item()
    frames = NUM_PLAYERS * len(rows)
    for name in BINARY_FIELDS:
        scores = {who: round(hits[(name, who)] / frames, 5) for field, who in hits if field == name}
        print(json.dumps({"binary": name, "player_frames": frames, **scores}))


if __name__ == "__main__":
    main()
