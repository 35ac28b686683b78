"""Atomic file and directory writes, hashing and small JSON helpers.

Every stage output goes through here: a reader (or a crash) never sees a half-written
file, and a failed write leaves the previous output in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.errors import DataError, OutputError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# errno values meaning "this output cannot be written here", whatever code was writing it.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free
    return None


def output_error(target: str | Path, cause: BaseException) -> OutputError:
    """A one-line :class:`OutputError` naming ``target`` and why it cannot be written."""
    target = Path(target)
    reason = getattr(cause, "reason", None) if isinstance(cause, OutputError) else None
    if reason is None:
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        code = getattr(cause, "errno", None)
        # np.save reports a short write without an errno ("N requested and M written").
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or (code is None and "written" in reason):
            free = _free_bytes(target.parent)
            if free is not None:
                reason += f" ({free / 1e6:.1f} MB free there)"
    err = OutputError(f"cannot write {target}: {reason}; the previous {target.name} (if any) is unchanged")
    err.reason = reason  # type: ignore[attr-defined]
    return err


def _is_output_failure(err: BaseException, *ours: Path) -> bool:
    """True for an error writing into ``ours`` (not, say, a failed read of an input file)."""
    if isinstance(err, OutputError):
        return True
    if not isinstance(err, OSError) or (err.errno is not None and err.errno not in WRITE_ERRNOS):
        return False
    if err.filename is None:
        return True
    name = Path(os.fsdecode(err.filename)).absolute()
    return any(name == p.absolute() or p.absolute() in name.parents for p in ours)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temp directory beside ``target``; on success it replaces ``target``.

    On an exception the temp directory is removed and ``target`` is untouched; a failure to
    write (permission, read-only or full disk) becomes an :class:`OutputError` naming ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        # mkdtemp makes 0700; give the output the permissions a plain mkdir would.
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as err:
        raise output_error(target, err) from err
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)  # put the previous output back
            raise
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_output_failure(err, tmp, target):
            raise output_error(target, err) from err
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``target`` for writing; rename it over ``target`` on success.

    A failed write (permission, read-only or full disk) removes the temp file, leaves ``target``
    as it was and raises an :class:`OutputError` naming ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; match a plain open()
    except OSError as err:
        raise output_error(target, err) from err
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_output_failure(err, Path(tmp), target):
            raise output_error(target, err) from err
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, keys sorted, so equal content gives equal bytes."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_png(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib ``Figure`` as PNG atomically; equal figures give equal bytes.

    The PNG's only varying metadata is "Software" (the matplotlib version); it is dropped,
    so a figure's bytes (and its hash in dvc.lock) depend on the data drawn alone.
    """
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, metadata={"Software": None})


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def save_array(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` atomically; .npy bytes depend only on the array (unlike .npz timestamps)."""
    with atomic_file(path) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def load_array(path: str | Path, mmap: bool = False) -> np.ndarray:
    """Load a .npy file with pickles refused (data files never execute code).

    A file holding pickled objects, or no array at all, is a :class:`DataError` naming it.
    """
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as err:  # numpy's answer to an object (pickled) array or a bad header
        with open(path, "rb") as f:
            is_npy = f.read(6) == b"\x93NUMPY"
        if not is_npy:  # numpy would try it as a pickle
            raise DataError(f"{path}: not a .npy file (no NUMPY magic); pickles are never loaded") from None
        if "allow_pickle" in str(err):
            raise DataError(f"{path}: holds pickled Python objects (an object array), which are never "
                            "loaded from data files since they could run code; write plain numeric arrays") from None
        raise DataError(f"{path}: not a readable .npy array: {err}") from None
    except (OSError, EOFError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataError(f"{path}: not a readable .npy array: {err}") from None
