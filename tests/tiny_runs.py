"""Training small enough for two shared CPU cores: one epoch of a few small batches.

Shared by the pipeline and browser tests (and docs/screenshots.py), which train through Dagster."""

TINY_EXPERIMENT = {
    "description": "test-sized run: one epoch of a few batches on CPU",
    "model": {"hidden_dim": 32, "trunk_dim": 16},
    "train": {
        "epochs": 1,
        "batch_size": 64,
        "max_train_batches": 4,
        "max_val_batches": 2,
        "device": "cpu",
        "wandb": False,
        "train_percent": 50,
        "loader": "memory",
    },
}
