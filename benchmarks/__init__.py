"""Benchmarks of the TruConnect provider against the bundled emulator (``make bench`` writes ``BENCHMARKS.md``).

Run ``python -m benchmarks.run`` (full) or ``python -m benchmarks.run --quick --output /tmp/b.md`` (smoke sizes).
"""
