"""tmbmerge's engine: the TMB container, its readers and writer, merging and verification.

Public entry points (imported lazily, so that importing ``engine`` is cheap):

- ``engine.open_file(path)``: open any supported event file (reader picked by magic bytes).
- ``engine.TmbWriter``: streaming writer of TMB files.
- ``engine.merge``: ``merge_files`` and ``merge_run``, returning report objects.
- ``engine.verify``: ``verify_file`` and the post-merge crosschecks.
- ``engine.generate``: the synthetic run producer.
"""

__version__ = "0.1.0"

__all__ = ["open_file", "TmbWriter", "__version__"]


def __getattr__(name):
    if name == "open_file":
        from .readers import open_file

        return open_file
    if name == "TmbWriter":
        from .writer import TmbWriter

        return TmbWriter
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
