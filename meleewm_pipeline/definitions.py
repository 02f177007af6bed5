"""Entry point for ``dg dev``, ``dagster dev -w workspace.yaml`` and ``dagster-webserver``.

Loads every definition under ``meleewm_pipeline/defs/`` and binds the resources. Resource fields
left unset fall back to ``MELEEWM_DATA``, ``MELEEWM_SOURCES``, ``MELEEWM_REPLAYS`` when used.

Project-wide policy: runs execute their steps in one process. The graph is a chain (each step needs
the previous one), so a process per step bought no parallelism and cost a Python start-up with the
whole project import per step (about 8 s each on a loaded 2-core machine, 4x the CLI for an
ingest); parsing and training parallelise inside their step. Scaling out swaps this executor for
Dagster's Kubernetes or Celery executor (README: "The instance, and outgrowing one machine").
"""

from pathlib import Path

import dagster as dg

from meleewm_pipeline.defs.resources import AutomationSettings, MeleeDataResource


def build_definitions(
    melee: MeleeDataResource | None = None, automation: AutomationSettings | None = None
) -> dg.Definitions:
    """The whole pipeline, with the given resources (tests pass a temporary data root)."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(
            resources={
                "melee": melee or MeleeDataResource(),
                "automation": automation or AutomationSettings(),
            },
            executor=dg.in_process_executor,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
