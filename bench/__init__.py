"""Benchmark commands behind ``benchmark.py``; one module per command, each with a ``main(argv)``."""
