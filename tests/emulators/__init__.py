"""Real local services for the test session: Postgres and bqemulator."""
