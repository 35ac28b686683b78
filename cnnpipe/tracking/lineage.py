"""What git and DVC know about the project: its root, the commit, and the data hashes in
dvc.lock (or computed here for data DVC has not recorded).

Tracking tags every run with these facts, so dvc.lock stays the one record of what was built
from what. Running the stages through DVC is :mod:`cnnpipe.flows.dvc`.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from cnnpipe.io import sha256_file

# `dvc exp run --temp` and queued experiments run in a copy at <root>/.dvc/tmp/exps/<tmp>/.
_EXP_TMP = (".dvc", "tmp", "exps")


def project_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) holding dvc.yaml or .dvc/."""
    here = Path(start or Path.cwd()).resolve()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file() or (candidate / ".dvc").is_dir():
            return candidate
    return here


def store_root(work_root: str | Path) -> Path:
    """Where the embedded stores live: the original project, even inside a ``dvc exp`` temp copy.

    The temp copy is deleted after the experiment; runs logged there would be lost.
    """
    parts = Path(work_root).resolve().parts
    for i in range(len(parts) - len(_EXP_TMP)):
        if parts[i : i + len(_EXP_TMP)] == _EXP_TMP:
            return Path(*parts[:i])
    return Path(work_root).resolve()


@dataclass(frozen=True)
class GitState:
    commit: str  # "none" outside a git repository or before the first commit
    dirty: bool
    changed: tuple[str, ...] = ()  # the tracked files that make it dirty (paths from the git root)


def pipeline_written(root: str | Path) -> list[str]:
    """What a pipeline run itself rewrites: dvc.lock and every out it records. The cached outs
    are git-ignored anyway; the ``cache: false`` ones (metrics/, plots/) are committed, as
    baselines for ``dvc metrics diff``, and change on every run that is not an edit."""
    lock = Path(root) / "dvc.lock"
    data = (yaml.safe_load(lock.read_text()) or {}) if lock.is_file() else {}
    outs = {Path(o["path"]).as_posix() for s in (data.get("stages") or {}).values()
            for o in s.get("outs") or [] if o.get("path")}
    return ["dvc.lock", *sorted(p for p in outs if not p.startswith(("/", "../")))]  # inside the project


def git_state(root: str | Path, ignore: tuple[str | Path, ...] = ()) -> GitState:
    """HEAD and whether tracked files differ from it, leaving out what the pipeline writes
    (:func:`pipeline_written`) and ``ignore`` (paths relative to ``root``). Untracked files
    don't count."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return GitState("none", False)
    # Code, params and data definitions are what "dirty" must catch; a stage's own results
    # (dvc.lock is rewritten after every stage of a repro) would mark every run dirty.
    excluded = [f":(exclude,literal){Path(p).as_posix()}" for p in (*pipeline_written(root), *ignore)]
    status = git("status", "--porcelain", "-z", "--untracked-files=no", "--no-renames", "--", ".", *excluded)
    if status.returncode != 0:  # unknown is not clean
        return GitState(head.stdout.strip(), True, (f"(git status failed: {status.stderr.strip()})",))
    changed = tuple(entry[3:] for entry in status.stdout.split("\0") if entry.strip())
    return GitState(head.stdout.strip(), bool(changed), changed)


def dvc_lock_hashes(root: str | Path) -> dict[str, str]:
    """Path (relative, posix) -> ``md5:<hash>`` of every dep and out recorded in dvc.lock."""
    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    stages = list((data.get("stages") or {}).values())
    # Every out after every dep: while a stage runs, its own deps entry is the previous run's,
    # and the upstream stage's out is the fresh record of the same path.
    entries = [e for s in stages for e in s.get("deps") or []] + [e for s in stages for e in s.get("outs") or []]
    hashes: dict[str, str] = {}
    for entry in entries:
        algo = entry.get("hash", "md5")
        if entry.get("path") and entry.get(algo):
            hashes[Path(entry["path"]).as_posix()] = f"{algo}:{entry[algo]}"
    return hashes


def content_hash(path: str | Path, pattern: str = "*") -> str:
    """``sha256:<hex>`` of a file, or of the sorted (relative name, file hash) list of a
    directory's files matching ``pattern``."""
    path = Path(path)
    if path.is_file():
        return f"sha256:{sha256_file(path)}"
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob(pattern) if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return f"sha256:{h.hexdigest()}"


def input_hashes(inputs: Mapping[str, str | Path], root: str | Path) -> dict[str, str]:
    """Name -> hash of each input: DVC's own from dvc.lock when recorded, else computed here."""
    root = Path(root).resolve()
    lock = dvc_lock_hashes(root)
    out = {}
    for name, path in inputs.items():
        full = (root / path).resolve()
        try:
            rel = full.relative_to(root).as_posix()
        except ValueError:
            rel = None
        out[name] = lock.get(rel) if rel in lock else content_hash(full)
    return out
