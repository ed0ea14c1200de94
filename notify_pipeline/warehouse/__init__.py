"""Where events end up for analysts: DuckDB locally, BigQuery in production."""
