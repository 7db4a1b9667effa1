"""A structure-aware fuzzer for TMB files and their sidecars (issue 10), and its building blocks.

- ``forge``: take a valid file apart (``dissect``) and put it back together (``assemble``)
  with every digest, length, offset and count recomputed, so a mutation reaches the check it
  aims at instead of dying at the first digest.
- ``mutations``: the mutations, each a named function of (parts, sidecar, random) that damages
  one structure (a zstd frame, the records of a block, the index's event table, the metadata's
  JSON, the sidecar, a header field, ...) and leaves everything else consistent.
- ``oracle``: what must hold for any file, however hostile: only ``EngineError`` escapes,
  no file takes over ``MAX_SECONDS``, memory stays bounded, and ``verify --deep`` and a deep
  merge (with and without ``--skip-bad``) agree on whether the file is sound.
- ``__main__``: ``python -m tests.fuzz --seconds 600`` runs it for as long as asked and keeps
  every crasher under ``tests/data/fuzz/``, where ``tests/test_fuzz.py`` replays it.
"""
