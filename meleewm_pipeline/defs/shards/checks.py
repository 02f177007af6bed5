"""Blocking check: every shard array has the shape and dtype its encoding expects."""

import dagster as dg

from meleewm_pipeline.defs.shards.assets import encoded_shards


@dg.asset_check(
    asset=encoded_shards,
    blocking=True,
    description="Shard arrays match the encoding's widths and dtypes (a mismatch would train on garbage).",
)
def encoded_shards_match_encoding(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    from meleewm_core.encoding import EncodingSpec
    from meleewm_core.shards import ShardError, check_shard_shapes, read_index

    event = context.instance.get_latest_materialization_event(encoded_shards.key)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, description="encoded_shards has not been materialized")
    folder = event.asset_materialization.metadata["path"].value
    try:
        index = read_index(folder)
        spec = EncodingSpec(index.encoding)
        if (index.float_per_frame, index.int_per_frame) != (spec.float_per_frame, spec.int_per_frame):
            raise ShardError(
                f"{folder}: index declares {index.float_per_frame} floats / {index.int_per_frame} ints per "
                f"frame, the encoding derives {spec.float_per_frame} / {spec.int_per_frame}"
            )
        check_shard_shapes(folder, index, spec)
    except ShardError as error:
        return dg.AssetCheckResult(passed=False, description=str(error))
    return dg.AssetCheckResult(
        passed=True,
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "shards": len(index.shards),
            "float_per_frame": spec.float_per_frame,
            "int_per_frame": spec.int_per_frame,
            "frames": index.num_frames,
        },
    )
