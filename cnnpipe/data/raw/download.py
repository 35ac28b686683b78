"""Download one URL to a file, retrying transient network errors with exponential back-off.

Used by the fetch stage's URL source and the Oxford-IIIT Pet reader. A URL that cannot be
had (a permanent HTTP error, a malformed URL, retries used up) raises
:class:`SourceUnavailable`, which the fetch stage reads as "try the next source".
"""

from __future__ import annotations

import http.client
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cnnpipe.security import credentials, redact

log = logging.getLogger(__name__)

# Transient server answers worth another attempt; any other HTTP error means "not here".
RETRY_HTTP = frozenset({408, 429, 500, 502, 503, 504})


class SourceUnavailable(Exception):
    """This source does not have the files (or cannot be reached); try the next one."""


def download(url: str, dest: Path, timeout_s: float, retries: int, backoff_s: float) -> None:
    """Fetch ``url`` into ``dest``, retrying network errors with exponential back-off.

    Every message shows ``url`` with its credentials redacted."""
    if credentials(url) is not None:  # urllib would read "user:password@host" as a host name
        raise SourceUnavailable(
            f"{redact(url)}: a URL with user:password@ cannot be downloaded (the downloader sends no "
            "credentials); download it yourself and give the local copy instead (datasets.<name>.path, "
            "or fetch.local_dir)")
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            _download_once(url, dest, timeout_s)
            return
        except urllib.error.HTTPError as err:
            if err.code not in RETRY_HTTP:
                raise SourceUnavailable(f"{redact(url)}: HTTP {err.code} {err.reason}") from None
            error = f"HTTP {err.code} {err.reason}"
        except ValueError as err:  # urllib's answer to a malformed URL
            raise SourceUnavailable(redact(f"invalid URL {url!r}: {err}")) from None
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            error = str(getattr(err, "reason", None) or err) or type(err).__name__
        if attempt + 1 < attempts:
            delay = backoff_s * 2**attempt
            log.info(
                "download of %s failed (%s); retry %d of %d in %.1f s", redact(url), error, attempt + 1, retries, delay
            )
            time.sleep(delay)
    raise SourceUnavailable(redact(f"could not download {url} after {attempts} attempt(s): {error}"))


def _download_once(url: str, dest: Path, timeout_s: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(dest, "wb") as f:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr)
        with bar:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    if total is not None and done != total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")
