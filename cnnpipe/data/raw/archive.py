"""Safe extraction of downloaded tar archives.

Every member is checked before anything is written: absolute names, ``..`` components, links
(symbolic or hard) and device or FIFO entries are refused with an error naming the member.
Python's ``data`` extraction filter then applies the same rules a second time.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from cnnpipe.errors import DataError
from cnnpipe.security import redact


def _check_member(archive: str, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or name.is_absolute() or (len(member.name) > 1 and member.name[1] == ":"):
        raise DataError(f"{archive}: refusing member {member.name!r}: absolute path")
    if ".." in name.parts:
        raise DataError(f"{archive}: refusing member {member.name!r}: '..' escapes the target directory")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: refusing member {member.name!r}: a link (to {member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {member.name!r}: not a regular file or directory")


def safe_extract(archive: Path, target: Path, source: str | None = None) -> None:
    """Extract a (compressed) tar ``archive`` into ``target`` after checking every member.

    Errors name ``source`` (e.g. the URL it was downloaded from, credentials redacted) when
    given: a downloaded archive is a temp file gone by the time the user reads the message."""
    name = redact(source) if source else str(archive)
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(name, member)
            tar.extractall(target, members=members, filter="data")
    except tarfile.FilterError as err:
        raise DataError(f"{name}: refusing unsafe member: {err}") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{name}: not a readable tar archive: {err}") from None
