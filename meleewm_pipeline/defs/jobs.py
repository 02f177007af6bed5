"""Jobs: ``ingest_job`` (one source, download to manifest) and ``retrain_job`` (shards to evaluation)."""

import dagster as dg

ingest_job = dg.define_asset_job(
    name="ingest_job",
    selection=dg.AssetSelection.assets(
        "raw_archive", "extracted_replays", "parsed_replays", "replay_manifest"
    ),
    description="Download, extract and parse one source (a `source` partition), then rebuild the manifest.",
)

retrain_job = dg.define_asset_job(
    name="retrain_job",
    selection=dg.AssetSelection.assets("encoded_shards", "world_model", "model_evaluation"),
    description="Encode the manifest's eligible games, train one world model, evaluate it.",
)
