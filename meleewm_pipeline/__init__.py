"""Dagster glue over ``meleewm_core``: assets, partitions, sensors, schedules, checks and jobs.

Every asset body is a few calls into ``meleewm_core``; anything that can run without Dagster
does so through the ``meleewm`` command line.
"""
