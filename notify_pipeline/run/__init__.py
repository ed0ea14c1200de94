"""The batch hub: deciding, claiming, rendering, handing off and recording one batch
(`Pipeline`), and the delivery worker loop that runs batch after batch (`run_worker`).

Plain Python: the Dagster jobs and `notify process` are thin layers over it.
"""

from notify_pipeline.run.pipeline import Pipeline, flush_events
from notify_pipeline.run.summary import BatchSummary, Counts, Totals
from notify_pipeline.run.worker import ready_batches, run_worker, stage_batches

__all__ = [
    "BatchSummary",
    "Counts",
    "Pipeline",
    "Totals",
    "flush_events",
    "ready_batches",
    "run_worker",
    "stage_batches",
]
