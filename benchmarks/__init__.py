"""Benchmarks: the pipeline against a naive loop and the machine's limit, latency, memory.

Entry points (each prints JSON): `python -m benchmarks.e2e`, `python -m benchmarks.latency`,
`python -m benchmarks.memory`; `python -m benchmarks.report` runs them and rewrites
docs/performance.md. Everything runs on 127.0.0.1 in throwaway folders, and every process a
benchmark starts is stopped before it returns.
"""
