"""Benchmarks: scripts that measure speed and print their figures (never run as tests)."""
