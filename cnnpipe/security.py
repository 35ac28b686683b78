"""Credentials never leave the process: the ``user:password@`` part of a URL is removed before
the URL is printed, logged, recorded in MLflow or written into a report."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """Replace the ``user:password@`` part of every URL in ``text`` with ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def strip_userinfo(uri: str) -> str:
    """``uri`` without its ``user:password@`` part (host and port kept)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))
