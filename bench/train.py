"""Benchmark the world-model core: encode and load time, training samples/s, and trained quality.

CPU (real data; parse and build the manifest first, e.g. with MELEEWM_DATA=/tmp/benchroot)::

    python bench/train.py cpu --data /tmp/benchroot --max-games 128 --batch-size 512
    python bench/train.py quality --data /tmp/benchroot --config experiments/baseline-v22.yaml

GPU (one call does the whole measurement; the frames are synthesised on the machine, same shapes
and dtypes as real shards, because the GPU box has no parsed games)::

    python bench/train.py gpu --frames 30000000 --out $OUT/bench-gpu.json

Every mode prints one JSON object (and writes it to ``--out`` when given). Figures are medians of
the trainer's own per-epoch samples/s (``fit``), so data gathering, the loss, sampled metrics and
the optimizer are all inside the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meleewm_core.config import EncodingConfig, ExperimentConfig, ModelConfig, TrainConfig  # noqa: E402
from meleewm_core.data import FrameData, GameSpan, make_batches  # noqa: E402
from meleewm_core.encoding import EncodingSpec  # noqa: E402
from meleewm_core.models import build_model, count_parameters  # noqa: E402
from meleewm_core.train import ensure_shards, fit, pick_device  # noqa: E402


def _emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def measure_training(
    data: FrameData,
    *,
    batch_size: int,
    device: torch.device,
    epochs: int,
    batches_per_epoch: int,
    compile_model: bool = False,
    precision: str = "auto",
    loader: str = "auto",
) -> dict:
    """Train ``epochs`` short epochs; the first absorbs warm-up (and compilation), the rest are timed."""
    experiment = ExperimentConfig(
        name="bench",
        encoding=data.spec.config,
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            max_train_batches=batches_per_epoch,
            max_val_batches=2,
            wandb=False,
            compile=compile_model,
            precision=precision,
            loader=loader,
        ),
    )
    torch.manual_seed(0)
    model = build_model(experiment.encoding, experiment.model).to(device)
    common = dict(mode=loader, context_len=experiment.model.context_len, device=device, max_batches=None)
    started = time.perf_counter()
    train = make_batches(
        data, "train", batch_size=batch_size, shuffle=True, **{**common, "max_batches": batches_per_epoch}
    )
    val = make_batches(data, "val", batch_size=batch_size, shuffle=False, **{**common, "max_batches": 2})
    if device.type == "cuda":
        torch.cuda.synchronize()
    batches_ready_s = time.perf_counter() - started
    records = fit(model, experiment, train, val, device=device, progress=False)
    timed = [r["samples_per_s"] for r in records[1:]] or [records[0]["samples_per_s"]]
    return {
        "batch_size": batch_size,
        "compile": compile_model,
        "loader": loader,
        "precision": precision,
        "batches_per_epoch": batches_per_epoch,
        "batches_ready_s": round(batches_ready_s, 3),
        "first_epoch_samples_per_s": records[0]["samples_per_s"],
        "samples_per_s": statistics.median(timed),
        "final_train_loss": records[-1]["train"].get("loss"),
    }


class PerSampleWindows(torch.utils.data.Dataset):
    """The reference's loading pattern, for a same-machine comparison: one window sliced per
    ``__getitem__`` and batched by DataLoader's default collate (same windows as ours)."""

    def __init__(self, data: FrameData, context_len: int):
        self.floats = torch.from_numpy(np.concatenate([np.asarray(f) for f, _ in data.shards]))
        self.ints = torch.from_numpy(np.concatenate([np.asarray(i) for _, i in data.shards]).astype(np.int64))
        self.targets = np.concatenate(data.targets("train", context_len))
        self.k = context_len
        self.ctrl = data.spec.controller_cols

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        t = int(self.targets[i])
        frame = self.floats[t]
        return self.floats[t - self.k : t], self.ints[t - self.k : t], frame[self.ctrl], frame, self.ints[t]


def with_stock_torch_layers(
    model: torch.nn.Module, embedding: bool = True, dropout: bool = True
) -> torch.nn.Module:
    """The model with torch's own Embedding and/or Dropout (what the reference runs) in place of
    ``meleewm_core.models.layers``; same parameters."""
    from meleewm_core.models import layers

    for module in model.modules():
        if embedding and isinstance(module, layers.Embedding):
            module.__class__ = torch.nn.Embedding
        elif dropout and isinstance(module, layers.Dropout):
            module.__class__ = torch.nn.Dropout
    return model


def measure_reference_style(data: FrameData, *, batch_size: int, batches: int) -> dict:
    """Same model, loss and optimizer in fp32, fed by per-sample __getitem__ + DataLoader."""
    from meleewm_core.config import LossWeights
    from meleewm_core.data import Batch
    from meleewm_core.encoding import head_layout
    from meleewm_core.metrics import compute_loss

    torch.manual_seed(0)
    model = with_stock_torch_layers(build_model(data.spec.config, ModelConfig()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    layout = head_layout(data.spec, "v22")
    loader = torch.utils.data.DataLoader(PerSampleWindows(data, 10), batch_size=batch_size, shuffle=True)

    def step(parts) -> None:
        batch = Batch(*parts)
        outputs = model(batch.float_ctx, batch.int_ctx, batch.next_ctrl)
        loss, _ = compute_loss(outputs, batch, layout, LossWeights())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times = []
    for i, parts in enumerate(loader):
        if i == batches + 5:
            break
        started = time.perf_counter()
        step(parts)
        times.append(time.perf_counter() - started)
    # The loader's own time lies between steps; measure the whole loop instead of the steps alone.
    started = time.perf_counter()
    for i, parts in enumerate(loader):
        if i == batches:
            break
        step(parts)
    seconds = time.perf_counter() - started
    return {
        "pattern": "per-sample __getitem__ + DataLoader, fp32",
        "batch_size": batch_size,
        "samples_per_s": round(batches * batch_size / seconds, 1),
        "step_only_samples_per_s": round(batch_size / statistics.median(times), 1),
    }


def run_cpu(args) -> dict:
    from meleewm_core.shards import encode_shards
    from meleewm_core.store import DataRoot

    torch.set_num_threads(args.threads or torch.get_num_threads())
    root = DataRoot.from_env(args.data)
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    bench_root = root
    started = time.perf_counter()
    try:
        shard_set = encode_shards(
            bench_root, encoding, max_games=args.max_games, progress=False, selection=args.selection
        )
        folder, new_games = shard_set.path, shard_set.new_games
    except ImportError:  # a GPU box without polars/peppi: use the shards carried to it
        folder, new_games = ensure_shards(ExperimentConfig(name="bench", encoding=encoding), bench_root), 0
    encode_s = time.perf_counter() - started

    started = time.perf_counter()
    data = FrameData.from_shards(folder, spec, max_games=args.max_games)
    batches = make_batches(
        data, "train", mode="memory", batch_size=args.batch_size, context_len=10, device="cpu", shuffle=True
    )
    first = next(iter(batches))
    load_s = time.perf_counter() - started
    assert first.float_ctx.shape[0] == args.batch_size

    training = [
        measure_training(
            data,
            batch_size=args.batch_size,
            device=torch.device("cpu"),
            epochs=args.epochs,
            batches_per_epoch=args.batches,
            precision=precision,
        )
        for precision in ("fp32", "bf16")
    ]
    reference_style = measure_reference_style(data, batch_size=args.batch_size, batches=args.batches)
    return {
        "mode": "cpu",
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average": os.getloadavg(),
            "cpu_count": os.cpu_count(),
        },
        "games": len(data.games),
        "frames": sum(g.num_frames for g in data.games),
        "encode_s_new_games": round(encode_s, 3) if new_games else None,
        "encode_new_games": new_games,
        "load_s": round(load_s, 3),
        "training": training,
        "reference_style": reference_style,
        "speedup_vs_reference_style": round(
            max(r["samples_per_s"] for r in training) / reference_style["samples_per_s"], 2
        ),
        "num_params": count_parameters(build_model(encoding, ModelConfig())),
    }


def synthetic_frames(num_frames: int, frames_per_game: int, spec: EncodingSpec, seed: int = 0) -> FrameData:
    """Frames with real shapes, dtypes and value ranges (random content) for throughput runs."""
    rng = np.random.default_rng(seed)
    floats = rng.random((num_frames, spec.float_per_frame), dtype=np.float32)
    ints = np.zeros((num_frames, spec.int_per_frame), dtype=np.int16)
    for name in spec.categorical_fields:
        for player in range(2):
            ints[:, spec.int_col(player, name)] = rng.integers(
                0, spec.vocab(name), num_frames, dtype=np.int16
            )
    ints[:, spec.stage_col] = 31
    games = []
    for i, offset in enumerate(range(0, num_frames - frames_per_game + 1, frames_per_game)):
        md5 = f"{i:032x}"
        games.append(GameSpan(md5, 0, offset, frames_per_game, "train" if i % 10 else "val"))
    return FrameData(spec, [(floats, ints)], games, "synthetic", {})


def run_gpu(args) -> dict:
    device = pick_device("auto")
    spec = EncodingSpec(EncodingConfig())
    started = time.perf_counter()
    data = synthetic_frames(args.frames, 4500, spec)
    synth_s = time.perf_counter() - started
    result = {
        "mode": "gpu",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "frames": args.frames,
        "synthesise_s": round(synth_s, 2),
        "num_params": count_parameters(build_model(spec.config, ModelConfig())),
        "runs": [],
    }
    deadline = time.perf_counter() + args.budget_s
    for batch_size, compile_model in [(65536, False), (65536, True), (131072, True)]:
        if time.perf_counter() > deadline:
            result["runs"].append(
                {"batch_size": batch_size, "compile": compile_model, "skipped": "time budget"}
            )
            continue
        try:
            run = measure_training(
                data,
                batch_size=batch_size,
                device=device,
                epochs=3,
                batches_per_epoch=args.batches,
                compile_model=compile_model,
                loader="gpu",
            )
        except Exception as error:  # noqa: BLE001 - a failed configuration is a result, the others still run
            run = {
                "batch_size": batch_size,
                "compile": compile_model,
                "error": f"{type(error).__name__}: {error}",
            }
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
        torch.cuda.empty_cache()
    # Whole epochs at the best configuration: the first compiles, the second is a full timed pass
    # over every training window.
    best = max(
        (r for r in result["runs"] if "samples_per_s" in r), key=lambda r: r["samples_per_s"], default=None
    )
    if best is not None:
        experiment = ExperimentConfig(
            name="bench",
            train=TrainConfig(
                epochs=2,
                batch_size=best["batch_size"],
                max_val_batches=1,
                wandb=False,
                compile=best["compile"],
            ),
        )
        model = build_model(experiment.encoding, experiment.model).to(device)
        train = make_batches(
            data,
            "train",
            mode="gpu",
            batch_size=best["batch_size"],
            context_len=10,
            device=device,
            shuffle=True,
        )
        val = make_batches(
            data,
            "val",
            mode="gpu",
            batch_size=best["batch_size"],
            context_len=10,
            device=device,
            shuffle=False,
            max_batches=1,
        )
        record = fit(model, experiment, train, val, device=device, progress=False)[-1]
        seconds_per_100m = 100e6 / record["samples_per_s"]
        result["full_epoch"] = {
            "windows": train.num_windows,
            "seconds": record["train_seconds"],
            "samples_per_s": record["samples_per_s"],
            "batch_size": best["batch_size"],
            "compile": best["compile"],
            "seconds_per_100m_frames": round(seconds_per_100m, 1),
        }
    return result


def run_quality(args) -> dict:
    from meleewm_core.config import load_experiment, parse_assignments
    from meleewm_core.store import DataRoot
    from meleewm_core.train import train_run

    overrides = {
        "train.max_games": args.max_games,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.wandb": False,
        "train.games": args.games,
        "train.compile": args.compile,
    }
    experiment = load_experiment(args.config, {**overrides, **parse_assignments(args.set or [])})
    started = time.perf_counter()
    result = train_run(experiment, DataRoot.from_env(args.data), progress=not args.quiet)
    epochs = result.manifest["all_epochs"]
    headline = ("action_acc", "action_change_acc", "position_mae", "damage_mae")
    return {
        "mode": "quality",
        "experiment": experiment.name,
        "overrides": args.set or [],
        "run_dir": str(result.run_dir),
        "seconds": round(time.perf_counter() - started, 1),
        "games": {k: len(v) for k, v in result.manifest["game_md5s"].items()},
        "frames": result.manifest["num_frames"],
        "per_epoch": [
            {
                "epoch": e["epoch"],
                "samples_per_s": e["samples_per_s"],
                **{k: round(e["val"][k], 4) for k in headline},
                **{f"persistence/{k}": round(e["val"][f"baseline/{k}"], 4) for k in headline},
            }
            for e in epochs
        ],
        "beats_persistence": epochs[-1]["beats_persistence"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    cpu = sub.add_parser("cpu", help="encode, load and train on real shards on this CPU")
    cpu.add_argument("--data", help="data root with parsed games and a manifest")
    cpu.add_argument("--max-games", type=int, default=128)
    cpu.add_argument("--batch-size", type=int, default=512)
    cpu.add_argument("--batches", type=int, default=150, help="timed batches per epoch")
    cpu.add_argument("--threads", type=int)
    cpu.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="epochs per precision; the first is warm-up, the median of the rest is reported",
    )
    cpu.add_argument(
        "--selection",
        default="two_players",
        help="two_players (every 2-player game, as the reference's 128-replay figure) or eligible",
    )
    gpu = sub.add_parser("gpu", help="the whole GPU measurement on synthesised frames")
    gpu.add_argument("--frames", type=int, default=30_000_000)
    gpu.add_argument("--batches", type=int, default=150, help="timed batches per epoch")
    gpu.add_argument("--budget-s", type=float, default=240)
    quality = sub.add_parser("quality", help="train an experiment and compare with persistence")
    quality.add_argument("--data", help="data root with parsed games and a manifest")
    quality.add_argument("--config", default="experiments/baseline-v22.yaml")
    quality.add_argument("--max-games", type=int, default=128)
    quality.add_argument("--epochs", type=int, default=3)
    quality.add_argument("--batch-size", type=int)
    quality.add_argument("--quiet", action="store_true")
    quality.add_argument(
        "--games", default="two_players", help="two_players (the reference's data) or eligible"
    )
    quality.add_argument(
        "--compile", action="store_true", help="torch.compile (pays off on long CUDA runs only)"
    )
    quality.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="extra override, e.g. model.delta_gate=false"
    )
    for p in (cpu, gpu, quality):
        p.add_argument("--out", help="also write the JSON result here")
    args = parser.parse_args()
    result = {"cpu": run_cpu, "gpu": run_gpu, "quality": run_quality}[args.mode](args)
    _emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
