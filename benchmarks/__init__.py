"""Benchmarks that are meant to be run again (loader, throughput, inference, checkpoint I/O, predict's checks,
landmarker side by side, the prepared GPU session).

Run them from the repository root, with the package installed (`pip install -e .`), as modules:

    python -m benchmarks.<name> [options]        # e.g. python -m benchmarks.throughput --sizes 256

Their figures, with the machine and the command that gave each, are in docs/results.md.
"""
