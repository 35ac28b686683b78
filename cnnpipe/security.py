"""Credentials never leave the process: the ``user:password@`` part of a URL is removed before
the URL is printed, logged, recorded in MLflow or written into a report.

The user info is everything between ``scheme://`` and the LAST ``@`` of the URL, the way a
person writing ``http://user:p@ss#/x@host`` means it (``urlsplit`` would end the authority at
the ``#`` or ``/`` and read part of the password as the port). A URL whose path holds an ``@``
is treated the same way: redacting too much is safe, printing a password is not.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from cnnpipe.errors import CnnpipeError

# scheme://, then (not a third slash: file:///x has no authority) the longest run of
# non-space characters that ends with '@': the user info up to the last '@'.
_USERINFO = re.compile(r"\b(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?!/)\S*@")


def redact(text: str) -> str:
    """Replace the ``user:password@`` part of every URL in ``text`` with ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def split_userinfo(uri: str) -> tuple[str | None, str]:
    """``(user info, uri without it)``; ``(None, uri)`` when the URI has none."""
    match = _USERINFO.match(uri.strip())
    if match is None:
        return None, uri
    return match.group(0)[len(match["scheme"]):-1], match["scheme"] + uri.strip()[match.end():]


def strip_userinfo(uri: str) -> str:
    """``uri`` without its ``user:password@`` part (host and port kept)."""
    return split_userinfo(uri)[1]


def credentials(uri: str) -> tuple[str, str | None] | None:
    """The (user, password) of ``uri``, percent-decoded; None without user info."""
    userinfo, _ = split_userinfo(uri)
    if userinfo is None:
        return None
    user, colon, password = userinfo.partition(":")
    return unquote(user), unquote(password) if colon else None


class BadURI(CnnpipeError):
    """A URI that cannot be parsed; the message shows it redacted."""


def check_uri(uri: str, what: str) -> None:
    """Raise :class:`BadURI` (one line, ``uri`` redacted) unless ``uri`` minus its user info parses
    as a URL with a numeric port."""
    from urllib.parse import urlsplit

    try:
        urlsplit(strip_userinfo(uri)).port  # noqa: B018  (parsing the port is the check)
    except ValueError as err:
        raise BadURI(f"{what} {redact(uri)} is not a valid URL ({err}); percent-encode special "
                     "characters of a user name or password (e.g. '#' as %23, '/' as %2F)") from None
