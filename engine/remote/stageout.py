"""Stage-out: an output bound for remote storage is written and verified locally, then uploaded
under a temporary name, checked by the server's own adler32, and renamed into place.

``merge_to_remote`` runs the ordinary merge (every check of the mode) into a private folder
under the staging directory (``$TMBMERGE_STAGING``, default ``$TMPDIR/tmbmerge-staging``),
refusing to start when that folder's filesystem has less room than the inputs take (the
output is never larger).  ``stage_out`` then uploads the sidecar and the data file: each goes
to a hidden temporary name beside its destination (``.NAME.tmbpart-PID-XXXX``, the local
convention), the server is asked for that file's adler32 (XRootD checksum query, or
``Want-Digest`` over HTTPS) and it must equal the one computed locally, then it is renamed
into place.  Sidecar first, as locally: a failure between the two withdraws it, so the final
name never holds a data file without its metadata, nor a partial or unverified one.  A failed
upload is retried whole (transient failures); whatever fails removes the temporary file.
Only after the data file is in place is the output declared, and (merge-run) inputs retired.
The staging folder is removed whatever happens, and the default staging directory with it
once empty: a command leaves nothing in ``$TMPDIR``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, OutputError, OutputExists
from . import release_staging_dir, staging_dir
from .retry import RemoteFailure, as_engine_error, retrying


def merge_to_remote(inputs, output, spec, *, progress=None, records=None, label=None):
    """``merge_files`` for a remote ``output`` (a ``RemotePath``); returns its ``MergeReport``."""
    from ..merge.after_verified import AfterVerified
    from ..merge.catalog import open_merge_catalog
    from ..merge.pipeline import merge_files

    try:
        exists = output.exists()
    except InputError as exc:  # the destination's server: an output failure
        raise OutputError(exc.message, path=output) from None
    if exists and not spec.force:
        raise OutputExists("output exists (use force=True to replace it)", path=output)
    folder = _private_staging(inputs, output)
    try:
        local = folder / output.name
        report = merge_files(
            inputs,
            local,
            replace(spec, declare=False, force=False),
            progress=progress,
            records=records,
            label=label or output.name,
        )
        stage_out(local, output, adler32=report.adler32, overwrite=spec.force)
        if spec.declare:  # from the staged copy: the same bytes, checked by the server's adler32
            with open_merge_catalog(spec) as catalog:
                AfterVerified(catalog, spec)(report)
        report.output = output
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        release_staging_dir()


def _private_staging(inputs, output) -> Path:
    """A fresh folder for one output, on a filesystem with room for it."""
    from . import location

    base = staging_dir()
    needed = 0
    for name in inputs:
        try:
            needed += location(name).stat().st_size
        except OSError:
            pass  # the merge's pre-flight reports unreadable inputs
    # made first (parents too: another command may just have removed an empty default base)
    folder = base / f"{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        shutil.rmtree(folder, ignore_errors=True)
        release_staging_dir()
        raise OutputError(
            f"staging folder {base} has {free:,} bytes free, the output needs up to {needed:,} "
            f"(set TMBMERGE_STAGING)",
            path=output,
        )
    return folder


def temporary_name(final):
    """The hidden name an upload is written under, beside ``final`` (the local convention)."""
    from ..fsutil import TEMP_MARK, TEMP_PREFIX

    return final.with_name(
        f"{TEMP_PREFIX}{final.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    )


def stage_out(local: Path, final, *, adler32: int | None = None, overwrite: bool = False) -> None:
    """Upload ``local`` (and its sidecar, first) to ``final``, each verified by the server's
    adler32."""
    from ..metadata import sidecar_path

    local_sidecar = sidecar_path(local)
    placed_sidecar = None
    if local_sidecar.exists():
        placed_sidecar = sidecar_path(final)
        upload_verified(local_sidecar, placed_sidecar, overwrite=overwrite)
    try:
        upload_verified(local, final, adler32=adler32, overwrite=overwrite)
    except BaseException:
        if placed_sidecar is not None:
            _remove_quietly(placed_sidecar)
        raise


def upload_verified(
    local: Path, final, *, adler32: int | None = None, overwrite: bool = False
) -> None:
    """One file: upload under a temporary name, compare adler32s, rename into place."""
    from ..checksums import adler32_hex
    from ..verify.dump import file_adler32

    want = adler32 if adler32 is not None else file_adler32(local)[0]
    protocol = final.protocol
    tmp = temporary_name(final)

    def upload():
        try:
            protocol.upload(local, tmp)
        except RemoteFailure:
            _remove_quietly(tmp)
            raise

    try:
        retrying(upload, final, "upload failed", output=True)
        got = protocol.checksum(tmp)
        if got != want:
            raise OutputError(
                "the server's adler32 of the upload differs from the local file's: not placed",
                path=final,
                expected=adler32_hex(want),
                actual=adler32_hex(got),
            )
        try:
            protocol.rename(tmp, final, overwrite=overwrite)
        except RemoteFailure as failure:
            if failure.message == "destination exists":
                raise OutputExists(
                    "output exists (use force=True to replace it)", path=final
                ) from None
            raise as_engine_error(
                failure, final, "cannot rename the upload into place", output=True
            ) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(rp) -> None:
    try:
        rp.protocol.remove(rp, quiet=True)
    except Exception:
        pass
