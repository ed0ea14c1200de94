"""notify_pipeline: a self-hostable email notification service orchestrated by Dagster."""

__version__ = "0.1.0"
