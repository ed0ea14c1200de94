"""The analyst half's core: warehouse SQL for per-service tables, daily stats, bounce and complaint
rates, retention and exports, and the alert requests they lead to. No Dagster here."""
