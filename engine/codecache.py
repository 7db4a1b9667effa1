"""Compiled code kept on disk between processes: where it may live, and machine code loaded back.

Strategy: a function compiled by LLVM (``walker``) is saved as the bytes of its machine code,
so that later processes run it without loading LLVM at all (llvmlite's library and its set-up
are ~70 MB resident and ~0.2 CPU-s per process).  Only code that needs no linking is saved: the
function must be alone in its executable section of the ELF object LLVM emits, with no
relocation applying to that section (no global data, no calls by name: what it calls is passed
in as a function pointer), so its bytes run wherever they are mapped.  Anything else (another
object format, relocations) is simply not cached and the caller compiles as before.

Loading maps the bytes into fresh anonymous memory, then makes that read-only and executable
(``mprotect``), never writable and executable at once.  A cache file holds a digest of its key
and code: a torn or foreign file is ignored and replaced.  The folder is
``$TMBMERGE_CODE_CACHE`` if set, else the package's ``__pycache__``, else the user's cache
folder, else a private folder in the temporary folder (ours, closed to others, as a cache is
code we run), as numba chooses for its own cache.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat
import struct
import sys
import tempfile
from pathlib import Path

import xxhash

MAGIC = b"TMBCODE1"


def usable_folder(folder: Path, *, private: bool = False) -> bool:
    """Can compiled code be cached in ``folder``?  (What numba itself tries: create it, create a
    file.)  A ``private`` folder (in the shared temporary folder) must also be ours and closed to
    others, as a cache is code we load."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
        if private:
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                return False
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def cache_folder() -> Path | None:
    """Where this package caches machine code (``TMBMERGE_CODE_CACHE`` if set), or None when
    nowhere is usable."""
    chosen = os.environ.get("TMBMERGE_CODE_CACHE")
    if chosen:
        return Path(chosen) if usable_folder(Path(chosen)) else None
    package = Path(__file__).parent / "__pycache__"
    if usable_folder(package):
        return package
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tmbmerge"
    if usable_folder(user):
        return user
    private = Path(tempfile.gettempdir()) / f"tmbmerge-code-cache-{os.getuid()}"
    return private if usable_folder(private, private=True) else None


def cache_path(name: str, key: bytes) -> Path | None:
    """The cache file of function ``name`` compiled from ``key`` (source and target), or None."""
    folder = cache_folder()
    return None if folder is None else folder / f"{name}-{xxhash.xxh3_64_hexdigest(key)}.code"


def function_code(elf: bytes, symbol: str) -> bytes | None:
    """The machine code of ``symbol`` in ELF object ``elf`` when it runs unlinked (see the module
    docstring), else None."""
    try:
        return _function_code(elf, symbol)
    except (struct.error, IndexError, ValueError):
        return None


SHT_SYMTAB, SHT_RELA, SHT_REL = 2, 4, 9
SHF_EXECINSTR = 0x4


def _function_code(elf: bytes, symbol: str) -> bytes | None:
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != (1 if sys.byteorder == "little" else 2):
        return None  # 64-bit, this host's byte order
    order = "<" if elf[5] == 1 else ">"
    (shoff,) = struct.unpack_from(order + "Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from(order + "HH", elf, 0x3A)
    sections = [
        struct.unpack_from(order + "IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)
    ]
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
    found = None
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != SHT_SYMTAB:
            continue
        names = sections[link]
        for at in range(offset, offset + size, entsize):
            name_at, _, _, index, value, length = struct.unpack_from(order + "IBBHQQ", elf, at)
            start = names[4] + name_at
            if elf[start : elf.index(b"\0", start)] == symbol.encode():
                found = (index, value, length)
    if found is None:
        return None
    index, value, length = found
    text = sections[index]
    if not text[2] & SHF_EXECINSTR or value != 0 or length != text[5]:
        return None  # the function must be its section, whole
    if any(s[1] in (SHT_RELA, SHT_REL) and s[7] == index for s in sections):
        return None  # something in it needs linking
    return elf[text[4] : text[4] + text[5]]


def save(path: Path, key: bytes, code: bytes) -> None:
    """Write ``code`` to the cache file ``path`` atomically; a failure only means no cache."""
    body = MAGIC + struct.pack("<QQ", len(code), xxhash.xxh3_64_intdigest(key + code)) + code
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_bytes(body)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def load(path: Path, key: bytes) -> int | None:
    """Map the code cached in ``path`` executable and return its address; None if there is no
    such file, it is not whole and ours, or the system refuses executable memory."""
    try:
        body = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + 16
    if len(body) < head or body[: len(MAGIC)] != MAGIC:
        return None
    length, digest = struct.unpack_from("<QQ", body, len(MAGIC))
    code = body[head:]
    if len(code) != length or xxhash.xxh3_64_intdigest(key + code) != digest:
        return None
    return _map_executable(code)


_mapped: list = []  # the mappings of loaded code: alive as long as the process


def _map_executable(code: bytes) -> int | None:
    if not hasattr(mmap, "PROT_EXEC"):
        return None
    try:
        memory = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE)
        memory.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(address, len(code), mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            return None  # e.g. a policy that forbids executable mappings: compile instead
    except (OSError, AttributeError, ValueError):
        return None
    _mapped.append(memory)
    return address
