"""What LevelDB may hold in the node's memory: its caches and buffers, and no mapped tables.

LevelDB's POSIX environment maps up to 1,000 table files into the process (``mmap``) and
reads them through the mapping. Every page a read touches then stays in the process's
resident set (``RssFile``) until the table leaves LevelDB's table cache, which holds up to
``max_open_files`` tables: on a node holding 1,000,000 readings (a block of 10,000 readings
is a 2.8 MB value, about one table file each), serving 20 blocks and 1,000 receipts, plus the
compactions after a start, left 110 MB of table pages in the node's RSS. Read with
``pread``, a table's data goes through LevelDB's block cache, whose size the store sets
(:data:`BLOCK_CACHE_BYTES`), and a large value it reads without
caching (``fill_cache=False``) is freed once Python has its copy.

LevelDB has the knob (``EnvPosixTestHelper::SetReadOnlyMMapLimit(0)``: no mapped files),
but the plyvel wheel's ``libleveldb`` does not export it; the library keeps its full symbol
table, so :func:`disable_table_mmap` finds the function there and calls it. It must run
before the first database of the process is opened (LevelDB reads the limit once, when it
makes its environment); :class:`~iomtnode.store.leveldb.BlockStore` calls it before every
open (only the first call does anything). Where the symbol cannot be found (another build of
LevelDB) tables stay mapped, which is slower to nothing but costs the RSS above; the reason
is logged once.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LIMIT_SYMBOL = b"_ZN7leveldb18EnvPosixTestHelper20SetReadOnlyMMapLimitEi"
ANCHOR_SYMBOL = b"leveldb_create_default_env"  # an exported function: locates the library
BLOCK_CACHE_BYTES = 8 * 2**20  # LevelDB's cache of table blocks read (its default, set
# here so that it is a choice): tables are read with pread, not mapped, so
# this bounds the table data LevelDB keeps in memory; the hot reads (a transaction id's
# location, state values) hit it or the Bloom filters. A stored block is read around it.
WRITE_BUFFER_BYTES = 4 * 2**20  # LevelDB's memtable before it is written to a table (its
# default); a second one may be held while the first is written, and the synced batch of a
# syncing node's blocks (up to about 8 MB) is in memory whatever this is
MAX_OPEN_FILES = 256  # table files LevelDB keeps open (its default is 1,000), each with its
# index and Bloom filter (10 bits per key) in memory: a chain of 1,000,000 readings is about
# 160 tables, all of them open; on a larger chain the least recently read are closed
LEVELDB_MEMORY_OPTIONS = {"lru_cache_size": BLOCK_CACHE_BYTES,
                          "write_buffer_size": WRITE_BUFFER_BYTES,
                          "max_open_files": MAX_OPEN_FILES}  # plyvel.DB's keywords
MAPPED_TABLES_MAX = 0  # table files LevelDB may map into memory (its default: 1,000)
_SHT_SYMTAB = 2
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")  # 64-bit little-endian ELF header
_SECTION = struct.Struct("<IIQQQQIIQQ")  # 64-bit section header
_SYMBOL = struct.Struct("<IBBHQQ")  # 64-bit symbol table entry

_lock = threading.Lock()
_outcome: str | None = None  # "disabled" or why not; set by the first call


def leveldb_library() -> Path | None:
    """The LevelDB shared library loaded in this process (plyvel's, once plyvel is
    imported), or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if path.startswith("/") and Path(path).name.startswith("libleveldb"):
                    return Path(path)
    except OSError:  # not Linux
        return None
    return None


def symbol_values(library: Path, names: set[bytes]) -> dict[bytes, int]:
    """``{name: st_value}`` of ``names`` in the full symbol table (``.symtab``) of the
    64-bit little-endian ELF file ``library``; names it lacks are missing from the result."""
    data = library.read_bytes()
    header = _ELF_HEADER.unpack_from(data)
    if header[0][:4] != b"\x7fELF" or header[0][4] != 2 or header[0][5] != 1:
        return {}
    shoff, shentsize, shnum = header[6], header[11], header[12]
    sections = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    found: dict[bytes, int] = {}
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != _SHT_SYMTAB or entsize != _SYMBOL.size:
            continue
        strings_at = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_at, _info2, _other, _shndx, value, _size = _SYMBOL.unpack_from(data, at)
            end = data.index(b"\0", strings_at + name_at)
            name = data[strings_at + name_at:end]
            if name in names:
                found[name] = value
    return found


def disable_table_mmap() -> str:
    """Set LevelDB's limit of mapped table files to :data:`MAPPED_TABLES_MAX` if no
    database is open yet in this process; returns ``"disabled"`` or why it could not."""
    global _outcome
    with _lock:
        if _outcome is None:
            _outcome = _disable()
            if _outcome != "disabled":
                log.warning("leveldb_mmap_kept", reason=_outcome)
        return _outcome


def _disable() -> str:
    library = leveldb_library()
    if library is None:
        return "plyvel's libleveldb is not a separate shared library"
    try:
        values = symbol_values(library, {LIMIT_SYMBOL, ANCHOR_SYMBOL})
    except (OSError, struct.error, ValueError, IndexError) as exc:
        return f"cannot read the symbols of {library}: {exc}"
    if set(values) != {LIMIT_SYMBOL, ANCHOR_SYMBOL}:
        return f"{library} has no SetReadOnlyMMapLimit in its symbol table"
    loaded = ctypes.CDLL(str(library))
    anchor = ctypes.cast(getattr(loaded, ANCHOR_SYMBOL.decode()), ctypes.c_void_p).value
    assert anchor is not None
    set_limit = ctypes.CFUNCTYPE(None, ctypes.c_int)(
        anchor - values[ANCHOR_SYMBOL] + values[LIMIT_SYMBOL])
    set_limit(MAPPED_TABLES_MAX)
    return "disabled"
