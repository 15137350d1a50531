"""Benchmarks run by `make bench`; each module's run() prints its own figures and ratios."""
