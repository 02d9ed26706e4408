"""Benchmarks: scripts that time competing implementations side by side in one run."""
