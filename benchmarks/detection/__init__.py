"""The detection battery: generated scenarios, scored against their truth.

    .venv/bin/python -m benchmarks.detection [--quick] [--seed S] [--tune]

See ``__main__`` and docs/detection.md.
"""
