"""numba's kernel cache falls back by itself when the package folder and $HOME are read-only.

Issue 10: with the installed package read-only and no writable ``$HOME/.cache``, numba refused
to compile the cached kernels: ``verify --deep`` exited 1 and ``merge --mode deep`` 7.  Root
ignores permissions, so "not writable" is a regular file where the folder should be.
"""

from __future__ import annotations

from pathlib import Path

from engine.kernels import choose_cache_folder


def _blocked(tmp_path: Path, name: str) -> Path:
    blocker = tmp_path / f"{name}-is-a-file"
    blocker.write_text("")
    return blocker / "cache"  # cannot be created: a file is in the way


def test_writable_package_folder_is_numbas_own_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert choose_cache_folder(tmp_path / "pkg", _blocked(tmp_path, "home"), tmp_path / "tmp") == (
        True,
        None,
    )


def test_falls_back_to_a_private_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    fallback = tmp_path / "tmp" / "numba"
    cache, folder = choose_cache_folder(
        _blocked(tmp_path, "pkg"), _blocked(tmp_path, "home"), fallback
    )
    assert (cache, folder) == (True, str(fallback))
    assert fallback.stat().st_mode & 0o777 == 0o700


def test_no_cache_when_nothing_is_writable(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert choose_cache_folder(
        _blocked(tmp_path, "pkg"), _blocked(tmp_path, "home"), _blocked(tmp_path, "tmp")
    ) == (False, None)


def test_a_shared_folder_someone_else_could_write_is_not_used(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    fallback = tmp_path / "shared"
    fallback.mkdir(mode=0o777)
    fallback.chmod(0o777)
    assert choose_cache_folder(_blocked(tmp_path, "pkg"), _blocked(tmp_path, "home"), fallback) == (
        False,
        None,
    )


def test_users_numba_cache_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert choose_cache_folder(
        _blocked(tmp_path, "pkg"), _blocked(tmp_path, "home"), tmp_path / "t"
    ) == (True, None)
