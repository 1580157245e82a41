"""Files tlbench reads and writes, whoever made them: written whole or not at all and never
through a link, read only when they are regular files (a FIFO or a device would hang a read).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable

TEMP_PREFIX = ".tmp-"


class NotRegularFile(OSError):
    """A path that should be a regular file is a FIFO, a device, a socket or a folder."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """``path`` opened for binary reading, or :class:`NotRegularFile` at once (no open of a
    FIFO blocks: it is opened non-blocking and checked before anything is read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path} is {_kind(mode)}, not a regular file; tlbench reads only regular files")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a regular file; with ``limit``, a larger file is an ``OSError`` naming it."""
    with open_regular(path) as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(f"{path} is larger than the {limit:,} bytes tlbench reads from such a file")
    return data


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], sync: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file beside it, which
    is fsynced (unless ``sync`` is false: a checksummed cache entry) and then renamed over
    ``path`` (a link at ``path`` is replaced, never written through). An ``OSError`` names
    ``path``; the temporary file is removed."""
    path = Path(path)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text, whatever the locale."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name, so the message says which file could not be written."""
    if isinstance(exc, NotRegularFile) or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (``O_NOFOLLOW``) with an error naming it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if Path(path).is_symlink():
            raise NotRegularFile(f"{path} is a symbolic link; tlbench never writes through a link: remove it "
                                 "or give another --out") from None
        raise
