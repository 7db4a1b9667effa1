"""Measuring tmbmerge on the machine at hand, and sizing a campaign's hardware from the
measurements.

``tmbmerge bench`` and ``tmbmerge spec`` are built from these modules, each with one job:

- ``runner``: ``run_bench`` generates a run and measures every figure in rounds -> report dict;
- ``tasks`` / ``worker`` / ``isolate``: each measurement as a named task run in a fresh
  interpreter, with its own peak memory;
- ``storage``, ``cpu``, ``reencode``, ``pagecache``: what is measured (disk floors, checksums
  and codecs, the copyd0om way, cold reads);
- ``dataset``: the generated run; ``machine``: what it ran on;
- ``figures``: names, baselines and the issue's targets, shared with the pytest-benchmark suite
  in ``bench/`` (which times with ``paired``);
- ``report`` / ``plot``: bench.json, bench.md, bench.png;
- ``sizing`` / ``sizing_report``: the campaign arithmetic (pure) and its rendering; ``units``.

docs/BENCHMARKS.md explains the method and how to read the figures.
"""
