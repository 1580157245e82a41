"""Files tlbench reads and writes, whoever made them: written whole or not at all and never
through a link, read only when they are regular files (a FIFO or a device would hang a read).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask sets it: set briefly to the usual one, once, at import
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file (mkstemp's 0o600 would hide a report from the group)


class NotRegularFile(OSError):
    """A path that should be a regular file is a FIFO, a device, a socket or a folder."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
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


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of a regular file; with ``limit``, a larger file is an ``OSError`` naming it."""
    with open_regular(path) as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(f"{path} is larger than the {limit:,} bytes tlbench reads from such a file")
    return data


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """A temporary file beside ``path`` (descriptor, name), renamed over ``path`` when the block
    ends and removed if it raises; an ``OSError`` names ``path``."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        os.fchmod(fd, NEW_FILE_MODE)
        yield fd, temporary
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], sync: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file beside it, which
    is fsynced (unless ``sync`` is false: a checksummed cache entry) and then renamed over
    ``path`` (a link at ``path`` is replaced, never written through). An ``OSError`` names
    ``path``; the temporary file is removed."""
    with _replacing(Path(path)) as (fd, _), os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def atomic_save(path: str | os.PathLike[str], save: Callable[[Path], None]) -> None:
    """:func:`atomic_write` for a library that saves only to a named path (Keras wants a
    ``.keras`` name): ``save(temporary)``, a name beside ``path`` with its suffix."""
    with _replacing(Path(path)) as (fd, temporary):
        os.close(fd)
        save(Path(temporary))
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write` of UTF-8 text, whatever the locale."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name, so the message says which file could not be written."""
    if isinstance(exc, NotRegularFile) or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def open_no_follow(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (``O_NOFOLLOW``) with an error naming it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError:
        if Path(path).is_symlink():
            raise NotRegularFile(f"{path} is a symbolic link; tlbench never writes through a link: remove it "
                                 "or give another --out") from None
        raise


def open_writable(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """:func:`open_no_follow` of a regular file to write into in place (``runs.jsonl``, ``.lock``):
    a FIFO or a device is a :class:`NotRegularFile` (opened non-blocking, so none hangs the open)."""
    fd = open_no_follow(path, flags | os.O_NONBLOCK, mode)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path} is {_kind(mode)}, not a regular file; tlbench writes only regular files")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise
