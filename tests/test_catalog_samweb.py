"""The SAM web client, against tests/samweb_server.py: API calls, retries, timeouts,
authentication."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess

import pytest
from catalog_contract import CatalogContract, raw, unmerged
from samweb_server import SamWebServer

from bindings.catalog import ALREADY_DECLARED, DECLARED, open_catalog
from bindings.catalog.samweb import SamWebCatalog, base_from_url, settings_from_environment
from engine.errors import (
    CatalogError,
    CatalogUnavailable,
    DeclarationConflict,
    FileNotDeclared,
    UsageError,
)

FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 2, "backoff": 0.0}
SAMWEB_ENV = (
    "TMBMERGE_SAMWEB_CERT",
    "TMBMERGE_SAMWEB_KEY",
    "TMBMERGE_SAMWEB_TOKEN",
    "BEARER_TOKEN_FILE",
    "TMBMERGE_SAMWEB_CA",
    "X509_CERT_DIR",
    "TMBMERGE_SAMWEB_TIMEOUT",
    "TMBMERGE_SAMWEB_RETRIES",
    "X509_USER_PROXY",
    "X509_USER_CERT",
    "X509_USER_KEY",
    "BEARER_TOKEN",
    "TMBMERGE_CATALOG_DEADLINE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in SAMWEB_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with SamWebServer("dzero") as running:
        yield running


@pytest.fixture
def catalog(server):
    with open_catalog(server.url, **FAST) as opened:
        yield opened


class TestSamWebCatalog(CatalogContract):
    pass  # the ``catalog`` fixture above serves the shared contract


def posts(server) -> list:
    return [entry for entry in server.requests if entry[0] == "POST"]


# --- the API as SAM's client uses it --------------------------------------------------------


@pytest.mark.parametrize(
    "url, base",
    [
        (
            "samweb+https://samweb.fnal.gov:8483/sam/dzero/api",
            "https://samweb.fnal.gov:8483/sam/dzero/api",
        ),
        ("samweb+http://127.0.0.1:9/sam/dzero/api/", "http://127.0.0.1:9/sam/dzero/api"),
        ("SAMWEB+HTTPS://host/sam/x/api", "https://host/sam/x/api"),
    ],
)
def test_url_to_api_base(url, base):
    assert base_from_url(url) == base


@pytest.mark.parametrize("url", ["samweb+https://", "samweb+ftp://host/api", "samweb:host"])
def test_bad_samweb_urls(url):
    with pytest.raises(UsageError):
        base_from_url(url)


def test_declare_posts_json_and_reads_the_id(server, catalog):
    result = catalog.declare(raw())
    assert result == (raw()["file_name"], DECLARED, 1)
    method, path, headers = posts(server)[0]
    assert path == "/sam/dzero/api/files"
    assert headers["Content-Type"] == "application/json"
    assert server.store[raw()["file_name"]]["checksum"] == ["adler32:11112222"]


def test_declare_sends_enstore_converted(server, catalog):
    catalog.declare(
        {"file_name": "big.raw", "file_size": 3690769125, "checksum": ["enstore:1952172898"]}
    )
    assert server.store["big.raw"]["checksum"] == ["adler32:03d6cb63"]


def test_get_uses_the_metadata_endpoint_and_converts_legacy_checksums(server, catalog):
    server.put(
        {
            "file_name": "old.raw",
            "file_size": 3690769125,
            "checksum": ["enstore:1952172898"],
            "lum_block_ranges": [[1, 5]],
        }
    )
    record = catalog.get("old.raw")
    assert record["checksum"] == ["adler32:03d6cb63"]
    assert record["lum_block_ranges"] == [[1, 5]]  # fields this module does not know are kept
    assert server.requests[-1][1] == "/sam/dzero/api/files/name/old.raw/metadata?format=json"


def test_names_are_quoted_in_paths(server, catalog):
    server.put({"file_name": "odd name?#.raw", "file_size": 1})
    assert catalog.get("odd name?#.raw")["file_name"] == "odd name?#.raw"
    assert "/files/name/odd%20name%3F%23.raw/metadata" in server.requests[-1][1]


def test_lineage_and_list_endpoints(server, catalog):
    catalog.declare(raw())
    catalog.declare(unmerged())
    assert catalog.children(raw()["file_name"]) == [unmerged()["file_name"]]
    assert server.requests[-1][1].endswith("/lineage/children?format=json")
    assert catalog.parents(unmerged()["file_name"]) == [raw()["file_name"]]
    assert server.requests[-1][1].endswith("/lineage/parents?format=json")
    assert catalog.files(run=178000, data_tier="unmerged-thumbnail") == [unmerged()["file_name"]]
    assert (
        server.requests[-1][1] == "/sam/dzero/api/files/list?format=json"
        "&dims=run_number+178000+and+data_tier+unmerged-thumbnail"
    )


def test_listing_everything_is_refused(catalog):
    with pytest.raises(CatalogError, match="needs a run or a data tier"):
        catalog.files()


def test_unknown_parent_found_by_the_server_is_reported(server, catalog, monkeypatch):
    # Another process may retire a parent between our check and the POST: the server's 4xx is shown.
    catalog.declare(raw())
    monkeypatch.setattr(SamWebCatalog, "records", lambda self, names: {name: {} for name in names})
    with pytest.raises(
        CatalogError, match=r"HTTP 404 FileNotFound: Parent file raw_x.raw not found"
    ):
        catalog.declare(unmerged(parents=[{"file_name": "raw_x.raw"}]))


def test_answer_that_is_not_json(server, catalog):
    server.fail_next(1, status=200)
    with pytest.raises(CatalogError, match="the answer is not JSON"):
        catalog.get("anything")


# --- retries and timeouts -------------------------------------------------------------------


@pytest.fixture(name="backoffs")
def _backoffs(monkeypatch):
    """The backoff of every retry the catalogue's urllib3 ``Retry`` sleeps before (seconds, as
    urllib3 computes them): the schedule is checked, never a clock."""
    from urllib3.util.retry import Retry

    waits: list[float] = []
    real = Retry._sleep_backoff

    def sleep_backoff(self):
        waits.append(self.get_backoff_time())
        real(self)

    monkeypatch.setattr(Retry, "_sleep_backoff", sleep_backoff)
    return waits


def test_503_is_retried_with_backoff(server, backoffs):
    with open_catalog(server.url, **dict(FAST, backoff=0.05)) as catalog:
        server.fail_next(2, status=503)
        result = catalog.declare(raw())
    assert result.status == DECLARED
    assert len(posts(server)) == 3
    # urllib3's schedule: the first retry at once, the second after 2 x backoff
    assert backoffs == [0.0, pytest.approx(0.10)]


def test_retries_run_out(server, catalog):
    server.fail_next(10, status=502)
    with pytest.raises(CatalogUnavailable) as caught:
        catalog.get("anything")
    assert "failed 3 times in " in str(caught.value)
    assert "(2 retries spent), last: HTTP 502" in str(caught.value)
    assert caught.value.exit_code == 8
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "status, error", [(400, "InvalidMetadata"), (403, "Forbidden"), (422, "ValidationError")]
)
def test_4xx_is_never_retried(server, catalog, status, error):
    server.fail_next(5, status=status, error=error, message="no, because")
    with pytest.raises(CatalogError) as caught:
        catalog.declare(raw())
    assert not isinstance(caught.value, CatalogUnavailable)
    assert f"HTTP {status} {error}: no, because" in str(caught.value)
    assert len(server.requests) == 1


def test_404_of_a_record_is_file_not_declared(catalog):
    with pytest.raises(FileNotDeclared):
        catalog.get("nothing.tmb")
    assert not catalog.exists("nothing.tmb")


def test_read_timeout_is_retried(server):
    with open_catalog(server.url, **dict(FAST, read_timeout=0.2, retries=1)) as catalog:
        server.put(raw())
        server.delay_next(1, 0.6)
        assert catalog.get(raw()["file_name"])["file_size"] == raw()["file_size"]
    assert len(server.requests) == 2


def test_read_timeout_twice_is_unavailable(server):
    with open_catalog(server.url, **dict(FAST, read_timeout=0.2, retries=1)) as catalog:
        server.delay_next(2, 0.6)
        with pytest.raises(CatalogUnavailable, match="ReadTimeout"):
            catalog.get("anything")


def test_lost_answer_to_a_declaration_is_already_declared_on_retry(server):
    with open_catalog(server.url, **dict(FAST, read_timeout=0.2, retries=1)) as catalog:
        server.delay_next(1, 0.6)  # the server declares, but its answer comes too late
        result = catalog.declare(raw())
    assert result == (raw()["file_name"], ALREADY_DECLARED, 1)
    assert len(posts(server)) == 2 and len(server.store) == 1


def test_duplicate_with_other_bytes_is_a_conflict(server, catalog):
    server.put(dict(raw(), file_size=1))
    with pytest.raises(DeclarationConflict, match="different file_size"):
        catalog.declare(raw())


# --- authentication and settings ------------------------------------------------------------


def test_bearer_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("TMBMERGE_SAMWEB_TOKEN", "s3cret\n")
    with SamWebServer(token="s3cret") as server, open_catalog(server.url, **FAST) as catalog:
        assert catalog.declare(raw()).status == DECLARED
        assert server.requests[-1][2]["Authorization"] == "Bearer s3cret"


def test_bearer_token_file(monkeypatch, tmp_path):
    (tmp_path / "bt").write_text("from-file\n")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(tmp_path / "bt"))
    with SamWebServer(token="from-file") as server, open_catalog(server.url, **FAST) as catalog:
        assert catalog.declare(raw()).status == DECLARED


def test_wrong_token_says_where_credentials_come_from(monkeypatch):
    monkeypatch.setenv("TMBMERGE_SAMWEB_TOKEN", "wrong")
    with SamWebServer(token="right") as server, open_catalog(server.url, **FAST) as catalog:
        with pytest.raises(
            CatalogError, match="HTTP 401 AuthenticationError.*TMBMERGE_SAMWEB_TOKEN"
        ):
            catalog.declare(raw())
        assert len(server.requests) == 1


@pytest.mark.parametrize("content", [None, ""])
def test_unusable_token_file(monkeypatch, tmp_path, content):
    if content is not None:
        (tmp_path / "bt").write_text(content)
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(tmp_path / "bt"))
    with pytest.raises(UsageError, match="BEARER_TOKEN_FILE"):
        open_catalog("samweb+https://host/sam/x/api")


def test_settings_from_environment():
    settings = settings_from_environment(
        {
            "TMBMERGE_SAMWEB_CERT": "/c.pem",
            "TMBMERGE_SAMWEB_KEY": "/k.pem",
            "X509_CERT_DIR": "/etc/grid-security/certificates",
            "TMBMERGE_SAMWEB_TIMEOUT": "5,30",
            "TMBMERGE_SAMWEB_RETRIES": "7",
        }
    )
    assert settings == {
        "cert": "/c.pem",
        "key": "/k.pem",
        "verify": "/etc/grid-security/certificates",
        "connect_timeout": 5.0,
        "read_timeout": 30.0,
        "retries": 7,
    }
    assert (
        settings_from_environment(
            {"TMBMERGE_SAMWEB_CA": "/ca.pem", "X509_CERT_DIR": "/d", "TMBMERGE_SAMWEB_TIMEOUT": "3"}
        )["verify"]
        == "/ca.pem"
    )
    assert settings_from_environment({"TMBMERGE_SAMWEB_TIMEOUT": "3"})["read_timeout"] == 3.0


@pytest.mark.parametrize(
    "name, value",
    [
        ("TMBMERGE_SAMWEB_TIMEOUT", "soon"),
        ("TMBMERGE_SAMWEB_TIMEOUT", "0,5"),
        ("TMBMERGE_SAMWEB_RETRIES", "many"),
    ],
)
def test_bad_settings(name, value):
    with pytest.raises(UsageError, match=name):
        settings_from_environment({name: value})


def test_key_without_certificate(monkeypatch):
    monkeypatch.setenv("TMBMERGE_SAMWEB_KEY", "/k.pem")
    with pytest.raises(UsageError, match="a key needs its certificate"):
        open_catalog("samweb+https://host/sam/x/api")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    where = tmp_path_factory.mktemp("pki")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tmbmerge test CA",
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (where / f"{name}.ext").write_text(extension + "\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return where


@pytest.fixture
def tls_server(certificates):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    context.load_verify_locations(certificates / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    with SamWebServer(ssl_context=context) as running:
        yield running


def test_client_certificate_over_tls(tls_server, certificates, monkeypatch):
    monkeypatch.setenv("TMBMERGE_SAMWEB_CERT", str(certificates / "client.pem"))
    monkeypatch.setenv("TMBMERGE_SAMWEB_KEY", str(certificates / "client.key"))
    monkeypatch.setenv("TMBMERGE_SAMWEB_CA", str(certificates / "ca.pem"))
    assert tls_server.url.startswith("samweb+https://")
    with open_catalog(tls_server.url, **FAST) as catalog:
        assert catalog.declare(raw()).status == DECLARED
        assert catalog.get(raw()["file_name"])["file_size"] == raw()["file_size"]


def test_tls_without_client_certificate_fails_without_retrying(
    tls_server, certificates, monkeypatch, backoffs
):
    monkeypatch.setenv("TMBMERGE_SAMWEB_CA", str(certificates / "ca.pem"))
    with open_catalog(tls_server.url, **dict(FAST, retries=3, backoff=1.0)) as catalog:
        with pytest.raises(CatalogError) as caught:
            catalog.get("anything")
    assert backoffs == []  # no backoff sleeps: not retried
    assert not isinstance(caught.value, FileNotDeclared)
    assert tls_server.requests == []


def test_unknown_server_certificate_is_refused(tls_server, certificates, monkeypatch):
    monkeypatch.setenv("TMBMERGE_SAMWEB_CERT", str(certificates / "client.pem"))
    monkeypatch.setenv("TMBMERGE_SAMWEB_KEY", str(certificates / "client.key"))
    with open_catalog(
        tls_server.url, **FAST
    ) as catalog:  # requests' own CA bundle: our test CA is not in it
        with pytest.raises(CatalogError, match="TLS failure"):
            catalog.get("anything")


def test_server_fixture_records_json_errors(server):
    # The fake server itself: a 4xx body is SAM's {"error", "message"} form.
    import requests

    answer = requests.get(server.base + "/files/name/none/metadata", timeout=2)
    assert answer.status_code == 404
    assert json.loads(answer.text) == {"error": "FileNotFound", "message": "File none not found"}


def test_grid_proxy_from_x509_user_proxy(tls_server, certificates, monkeypatch, tmp_path):
    # a grid proxy holds certificate and key in one file; samweb users have X509_USER_PROXY set
    proxy = tmp_path / "x509up_u1000"
    proxy.write_text(
        (certificates / "client.pem").read_text() + (certificates / "client.key").read_text()
    )
    monkeypatch.setenv("X509_USER_PROXY", str(proxy))
    monkeypatch.setenv("X509_CERT_DIR", str(certificates / "ca.pem"))
    url = tls_server.url.removeprefix(
        "samweb+"
    )  # https://127.0.0.1:PORT/sam/test/api, as samweb users write it
    with open_catalog(url, **FAST) as catalog:
        assert isinstance(catalog, SamWebCatalog)
        assert catalog.declare(raw()).status == DECLARED


def test_samweb_environment_conventions(tmp_path):
    proxy, cert, key = (tmp_path / name for name in ("proxy.pem", "usercert.pem", "userkey.pem"))
    for path in (proxy, cert, key):
        path.write_text("pem")
    assert settings_from_environment(
        {"X509_USER_PROXY": str(proxy), "X509_USER_CERT": str(cert)}
    ) == {"cert": str(proxy)}
    assert settings_from_environment({"X509_USER_CERT": str(cert), "X509_USER_KEY": str(key)}) == {
        "cert": str(cert),
        "key": str(key),
    }
    assert settings_from_environment(
        {"TMBMERGE_SAMWEB_CERT": "/c.pem", "X509_USER_PROXY": str(proxy)}
    ) == {"cert": "/c.pem"}
    assert settings_from_environment(
        {"BEARER_TOKEN": " tok\n", "BEARER_TOKEN_FILE": "/nowhere"}
    ) == {"token": "tok"}
    assert settings_from_environment({"TMBMERGE_SAMWEB_TOKEN": "a", "BEARER_TOKEN": "b"}) == {
        "token": "a"
    }
    with pytest.raises(UsageError, match="X509_USER_PROXY: cannot read"):
        settings_from_environment({"X509_USER_PROXY": str(tmp_path / "gone")})


@pytest.mark.parametrize(
    "url", ["https://samweb.fnal.gov:8483/sam/dzero/api", "http://127.0.0.1:9/sam/dzero/api/"]
)
def test_plain_http_urls_are_sam_web(url):
    assert base_from_url(url) == url.rstrip("/")
    assert isinstance(open_catalog(url), SamWebCatalog)
