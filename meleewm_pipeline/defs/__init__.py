"""Definitions, one folder per stage (sources, raw, parse, manifest, shards, train, eval).

``meleewm_pipeline.definitions`` loads this package with ``dg.load_from_defs_folder``.
"""
