"""Benchmarks of the gateway against baselines measured in the same run, on loopback.

`python -m bench` (or `make bench`) starts every process it needs (receiver, bare relay,
gateway, load generator), pins them to cores where `taskset` exists, prints a table with
ratios and targets, and rewrites docs/BENCHMARKS.md. `--quick` and `--scenario N` iterate.
"""
