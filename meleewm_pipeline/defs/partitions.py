"""The one partitioning of the pipeline: by source (a tournament dump, a collection, a folder).

Per-replay partitions were considered and rejected: the anonymized ranked dump alone holds
hundreds of thousands of replays, past the 100k partitions per asset Dagster advises. Replays
stay granular as one parquet file and one ledger row each.
"""

import dagster as dg

source_partitions = dg.DynamicPartitionsDefinition(name="source")

# A backfill of many sources runs this many per run, so a backfill of 40 sources is 4 runs, not 40.
SOURCES_PER_BACKFILL_RUN = 10
source_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=SOURCES_PER_BACKFILL_RUN)
