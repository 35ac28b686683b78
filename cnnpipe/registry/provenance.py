"""Where a version to be registered comes from, and whether the register stage may promote it.

Only a committed, clean ``dvc repro`` promotes automatically (through the gates). Inside
``dvc exp run`` (DVC sets ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV`` for every stage it runs)
or from a working tree whose tracked files differ from HEAD, the version stays ``@challenger``,
tagged with the experiment, the commit it started from and its params, until
``cnnpipe promote NAME --experiment EXP`` (or ``--version N``) takes it through the gates.
Outside git nothing says where the model came from: it is promoted as before, and said so.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnpipe.config import EXTENDS, merge, read_params
from cnnpipe.errors import CnnpipeError
from cnnpipe.tracking.lineage import git_state

ENV_EXP_NAME = "DVC_EXP_NAME"
ENV_EXP_BASELINE = "DVC_EXP_BASELINE_REV"
PARAMS_FILE = "params.yaml"  # the file `dvc exp run -S` edits and `dvc params diff` compares

# The version tags (read back by `cnnpipe promote --experiment` and `cnnpipe lineage`).
ORIGIN_TAG = "cnnpipe.origin"  # commit | experiment | dirty | unknown
EXPERIMENT_TAG = "cnnpipe.experiment"
BASELINE_TAG = "cnnpipe.baseline_commit"
PARAMS_HASH_TAG = "cnnpipe.params_hash"
PARAMS_CHANGED_TAG = "cnnpipe.params_changed"
CHANGED_FILES_TAG = "cnnpipe.changed_files"
MAX_TAG = 4000  # below the registry's 5000-character tag values


@dataclass(frozen=True)
class Provenance:
    origin: str  # "commit", "experiment", "dirty" (uncommitted edits) or "unknown" (no git commit)
    commit: str  # the commit the run started from ("none" outside git)
    params_hash: str
    experiment: str | None = None
    changed_files: tuple[str, ...] = ()
    changed_params: dict[str, list[Any]] = field(default_factory=dict)  # key -> [at the commit, now]

    @property
    def may_promote(self) -> bool:
        """Whether the register stage may take the version through the gates itself."""
        return self.origin in ("commit", "unknown")

    def tags(self) -> dict[str, str]:
        out = {ORIGIN_TAG: self.origin, BASELINE_TAG: self.commit, PARAMS_HASH_TAG: self.params_hash}
        if self.experiment:
            out[EXPERIMENT_TAG] = self.experiment
        if self.changed_params:
            out[PARAMS_CHANGED_TAG] = _capped(json.dumps(self.changed_params, sort_keys=True))
        if self.changed_files:
            out[CHANGED_FILES_TAG] = _capped(json.dumps(list(self.changed_files)))
        return out

    def held_reason(self, name: str, version: str) -> str:
        """Why the register stage promoted nothing, and the command that decides instead."""
        params = ", ".join(f"{k} {_show(old)} -> {_show(new)}" for k, (old, new) in self.changed_params.items())
        changed = f"; params changed: {params}" if params else ""
        if self.experiment:
            return (f"challenger only: experiment {self.experiment} (from commit {self.commit[:12]}{changed}); "
                    f"promote it with `cnnpipe promote {name} --experiment {self.experiment}`")
        files = ", ".join(self.changed_files[:5]) + (", ..." if len(self.changed_files) > 5 else "")
        return (f"challenger only: uncommitted changes to {files} (on commit {self.commit[:12]}{changed}); "
                f"commit them and re-run, or promote it with `cnnpipe promote {name} --version {version}`")


def provenance(root: str | Path, params: Mapping[str, Any], ignore: tuple[str | Path, ...] = (),
               env: Mapping[str, str] | None = None) -> Provenance:
    """The provenance of a run in project ``root`` with the effective ``params``; ``ignore``:
    files the running stage writes itself (they don't make the tree dirty)."""
    env = os.environ if env is None else env
    params_hash = "sha256:" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    git = git_state(root, ignore)
    experiment = env.get(ENV_EXP_NAME) or None
    commit = env.get(ENV_EXP_BASELINE) or git.commit
    if experiment is None and git.commit == "none":
        return Provenance("unknown", "none", params_hash)
    if experiment is None and not git.dirty:
        return Provenance("commit", commit, params_hash)
    return Provenance("experiment" if experiment else "dirty", commit, params_hash, experiment,
                      git.changed, changed_params(root, commit))


def changed_params(root: str | Path, commit: str) -> dict[str, list[Any]]:
    """Flat key -> [value at ``commit``, value now] for each params.yaml value that differs
    (what ``dvc params diff`` shows; an ``extends`` overlay on its base as the base is now);
    empty when either side can't be read."""
    shown = subprocess.run(["git", "show", f"{commit}:./{PARAMS_FILE}"], cwd=root,
                           capture_output=True, text=True, check=False)
    try:
        before = yaml.safe_load(shown.stdout) if shown.returncode == 0 else None
        if isinstance(before, dict) and isinstance(base := before.pop(EXTENDS, None), str):
            before = merge(read_params(Path(root) / base), before)
        now = read_params(Path(root) / PARAMS_FILE)
    except (OSError, yaml.YAMLError, CnnpipeError):
        return {}
    if not isinstance(before, dict):
        return {}
    old, new = _flat(before), _flat(now)
    return {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _capped(text: str) -> str:
    return text if len(text) <= MAX_TAG else text[: MAX_TAG - 3] + "..."
