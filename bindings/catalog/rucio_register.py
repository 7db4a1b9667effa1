"""Registering a declared file's replica in Rucio (``--register rucio:RSE?scope=S&dataset=D``),
with ``rucio-clients``.

After a verified output is declared, ``RucioRegistration.register(path, metadata)`` adds its
replica at the RSE (``ReplicaClient.add_replicas``: scope, name, bytes, adler32, PFN) and
attaches the file to the dataset (``DIDClient.attach_dids``).  Idempotent, like declarations:
a replica Rucio already holds (``Duplicate``) is compared with what it knows of the file
(``DIDClient.get_did``: bytes and adler32) and is "already registered" when they agree; a
file attached already is fine.  Any difference, and every error Rucio reports
(``FileConsistencyMismatch``, an unknown RSE or dataset, refused credentials ...), is a
``CatalogError`` (exit 8) naming the file: the verified output stays, nothing is retired.

The spec: ``rucio:RSE?scope=SCOPE&dataset=[SCOPE:]NAME[&pfn=PREFIX]``.  The PFN is ``PREFIX`` +
the file name when given (the storage URL of the folder the outputs are published in), else
``file://`` + the output's absolute path.  Where Rucio is and who we are come from Rucio's own
configuration, as for every Rucio client: ``rucio.cfg`` (``RUCIO_CONFIG``/``RUCIO_HOME``) and
``RUCIO_ACCOUNT``, ``RUCIO_AUTH_TYPE`` ...; each request is bounded by the catalogue timeout.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from engine.checksums import adler32_from_checksums, format_adler32
from engine.errors import CatalogError, CatalogUnavailable, UsageError

REGISTERED = "registered"
ALREADY_REGISTERED = "already registered"
DEFAULT_TIMEOUT = 60


def parse_spec(spec: str) -> tuple[str, str, str, str | None]:
    """(RSE, scope, dataset name, PFN prefix or None) of ``rucio:RSE?scope=S&dataset=D[&pfn=P]``."""
    kind, _, rest = spec.partition(":")
    rse, _, query = rest.partition("?")
    options = {key: values[-1] for key, values in parse_qs(query).items()}
    unknown = sorted(set(options) - {"scope", "dataset", "pfn"})
    if (
        kind != "rucio"
        or not rse
        or unknown
        or not options.get("scope")
        or not options.get("dataset")
    ):
        raise UsageError(
            f"--register {spec!r}: want rucio:RSE?scope=SCOPE&dataset=NAME[&pfn=PREFIX]"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    dataset = options["dataset"]
    if ":" in dataset:
        dataset_scope, _, dataset = dataset.partition(":")
        if dataset_scope != options["scope"]:
            raise UsageError(
                f"--register {spec!r}: the dataset's scope differs from scope={options['scope']}"
            )
    return rse, options["scope"], dataset, options.get("pfn")


class RucioRegistration:
    """Replica registration at one RSE, into one dataset (see the module docstring)."""

    def __init__(self, spec: str, *, client=None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.spec = spec
        self.rse, self.scope, self.dataset, self.pfn_prefix = parse_spec(spec)
        self._client = client
        self.timeout = timeout

    @property
    def client(self):
        if self._client is None:
            try:
                from rucio.client import Client
                from rucio.common.exception import RucioException
            except ImportError:
                raise UsageError(
                    "--register rucio:... needs rucio-clients (pip install rucio-clients)"
                ) from None
            try:
                self._client = Client(timeout=int(max(1, self.timeout)))
            except RucioException as exc:
                raise CatalogError(f"rucio: cannot open a client: {_message(exc)}") from None
        return self._client

    def pfn(self, path: Path) -> str:
        if self.pfn_prefix:
            return self.pfn_prefix.rstrip("/") + "/" + path.name
        return "file://" + str(Path(path).resolve())

    def register(self, path: Path, metadata: dict) -> str:
        """Register ``path`` (declared with ``metadata``); REGISTERED or ALREADY_REGISTERED."""
        from rucio.common import exception as rucio_errors

        name = metadata["file_name"]
        adler = adler32_from_checksums(metadata.get("checksum"), metadata.get("file_size"))
        if adler is None or "file_size" not in metadata:
            raise CatalogError("rucio: a replica needs the file's size and adler32", path=name)
        hex_adler = format_adler32(adler).split(":", 1)[1]
        replica = {
            "scope": self.scope,
            "name": name,
            "bytes": metadata["file_size"],
            "adler32": hex_adler,
            "pfn": self.pfn(Path(path)),
        }
        status = REGISTERED
        try:
            try:
                self.client.add_replicas(rse=self.rse, files=[replica])
            except rucio_errors.Duplicate:
                known = self.client.get_did(scope=self.scope, name=name)
                if (
                    known.get("bytes") != replica["bytes"]
                    or str(known.get("adler32", "")).lower() != hex_adler
                ):
                    raise CatalogError(
                        f"rucio: {self.scope}:{name} is known with bytes {known.get('bytes')} "
                        f"and adler32 {known.get('adler32')}, not {replica['bytes']} and "
                        f"{hex_adler}",
                        path=name,
                    ) from None
                status = ALREADY_REGISTERED
            try:
                self.client.attach_dids(
                    scope=self.scope,
                    name=self.dataset,
                    dids=[{"scope": self.scope, "name": name}],
                    rse=self.rse,
                )
            except rucio_errors.FileAlreadyExists:
                pass  # attached already: a rerun
        except rucio_errors.RucioException as exc:
            kind = type(exc).__name__
            error = (
                CatalogUnavailable
                if kind in ("ServiceUnavailable", "CannotAuthenticate")
                else CatalogError
            )
            raise error(f"rucio: {kind}: {_message(exc)}", path=name) from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise CatalogUnavailable(f"rucio: cannot reach the server: {exc}", path=name) from None
        return status


def _message(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200]
