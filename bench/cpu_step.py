"""Where a CPU training step goes: the v2.2 MLP's step with torch's stock modules against each
change of ``meleewm_core/models/layers.py`` and the fused AdamW, and the ops behind them.

    python bench/cpu_step.py --data /tmp/benchroot --threads 2

Steps are timed on the same pre-gathered batches (batch 512, bf16 autocast where the CPU has
native bf16), best of 3 passes; the op timings use the shapes of one such step (10,240 looked-up
rows per embedding table, a 512x512 dropout mask); ``--profile`` adds torch.profiler's costliest
ops per step for the stock and the final step. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train import with_stock_torch_layers  # noqa: E402
from meleewm_core.config import EncodingConfig, ExperimentConfig, LossWeights, TrainConfig  # noqa: E402
from meleewm_core.data import FrameData, make_batches  # noqa: E402
from meleewm_core.encoding import EncodingSpec, head_layout  # noqa: E402
from meleewm_core.metrics import compute_loss  # noqa: E402
from meleewm_core.models import build_model  # noqa: E402
from meleewm_core.store import DataRoot  # noqa: E402
from meleewm_core.train import ensure_shards, use_bf16  # noqa: E402

VARIANTS = {
    "stock torch modules, foreach AdamW": (False, False, False),
    "+ fused AdamW": (False, False, True),
    "+ index_add_ embedding only": (True, False, False),
    "+ pooled dropout only": (False, True, False),
    "all three (what train.py runs)": (True, True, True),
}
FIRST, LAST = list(VARIANTS)[0], list(VARIANTS)[-1]


def per_call_ms(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - started) / repeats * 1e3, 3)


def training_step(spec: EncodingSpec, fast_embedding: bool, pooled_dropout: bool, fused: bool, bf16: bool):
    """One v2.2 training step as a function of a batch, with the chosen modules and optimizer."""
    torch.manual_seed(0)
    model = with_stock_torch_layers(
        build_model(spec.config, ExperimentConfig(name="bench").model),
        embedding=not fast_embedding,
        dropout=not pooled_dropout,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=fused)
    layout = head_layout(spec, "v22")

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(batch.float_ctx, batch.int_ctx, batch.next_ctrl)
        loss, _ = compute_loss(outputs, batch, layout, LossWeights())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def samples_per_s(step, batches) -> float:
    """Best of 3 passes over ``batches[10:]`` after 10 warm-up steps."""
    for batch in batches[:10]:
        step(batch)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for batch in batches[10:]:
            step(batch)
        best = max(best, sum(len(b.float_tgt) for b in batches[10:]) / (time.perf_counter() - started))
    return round(best, 1)


def profile_ms_per_step(step, batches, top: int = 10) -> dict[str, float]:
    """Self CPU time of the ``top`` costliest ops, in ms per step, over 10 profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    for batch in batches[:10]:
        step(batch)
    profiled = batches[10:20]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in profiled:
            step(batch)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    ms = {e.key: round(e.self_cpu_time_total / 1e3 / len(profiled), 2) for e in events[:top]}
    return {"total": round(sum(e.self_cpu_time_total for e in events) / 1e3 / len(profiled), 2), **ms}


def op_timings() -> dict:
    rows, vocab, dim = 10_240, 400, 32
    indices = torch.randint(0, vocab, (rows,))
    grad = torch.randn(rows, dim)
    mask = torch.empty(512, 512)
    return {
        "embedding_dense_backward (400x32 table, 10,240 rows) ms": per_call_ms(
            lambda: torch.ops.aten.embedding_dense_backward(grad, indices, vocab, -1, False)
        ),
        "index_add_ (same) ms": per_call_ms(lambda: torch.zeros(vocab, dim).index_add_(0, indices, grad)),
        "bernoulli_ 512x512 mask ms": per_call_ms(lambda: mask.bernoulli_(0.9)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="data root with parsed games and a manifest (or just the shards)")
    parser.add_argument("--max-games", type=int, default=128)
    parser.add_argument("--selection", default="two_players")
    parser.add_argument("--batches", type=int, default=60, help="timed batches per pass")
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile 10 steps of the first and last variant (ms per step of the costliest ops)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    encoding = EncodingConfig()
    spec = EncodingSpec(encoding)
    experiment = ExperimentConfig(
        name="bench", encoding=encoding, train=TrainConfig(max_games=args.max_games, games=args.selection)
    )
    folder = ensure_shards(experiment, DataRoot.from_env(args.data), progress=False)
    data = FrameData.from_shards(folder, spec, max_games=args.max_games)
    batches = list(
        make_batches(
            data,
            "train",
            mode="memory",
            batch_size=512,
            context_len=10,
            device="cpu",
            shuffle=True,
            max_batches=args.batches + 10,
        )
    )
    bf16 = use_bf16(torch.device("cpu"), "auto")
    result = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_autocast": bf16,
        "samples_per_s": {
            name: samples_per_s(training_step(spec, *flags, bf16=bf16), batches)
            for name, flags in VARIANTS.items()
        },
        "ops": op_timings(),
    }
    if args.profile:
        result["profile_ms_per_step"] = {
            name: profile_ms_per_step(training_step(spec, *VARIANTS[name], bf16=bf16), batches)
            for name in (FIRST, LAST)
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
