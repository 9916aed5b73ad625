"""Benchmarks: tusd-py beside the servers users would pick instead, and the physical limits.

Run them with `benchmarks/run` (see benchmarks/driver.py and docs/performance.md).
"""
