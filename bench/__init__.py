"""Benchmarks: plain dramatiq against the tracked platform, in one interleaved run."""
