"""Benchmark harness for dagloop (see benchmarks/README.md)."""
