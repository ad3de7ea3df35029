"""Finished runs read back from their files, for comparing runs and re-running one.

A run dir holds ``config.yaml`` (the resolved config) and, once the job ended, ``summary.json``;
``hardware.json`` and ``.hydra/overrides.yaml`` when the entry point made it. Torch-free: these
are plain files (scripts/compare.py, scripts/reproduce.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from lightspeed.errors import UserError

# keys left out of a comparison of configs: where the run wrote (paths.*) and Hydra's own
# settings differ between any two runs without changing what they compute
NOT_COMPARED = ("paths.*", "hydra.*")
RUN_DIR, ROOT_DIR = "<run dir>", "<root>"


class RunFileError(UserError):
    """A run dir's files are missing or cannot be read."""


@dataclass
class SavedRun:
    """One finished run as its files describe it.

    Attributes:
        path: the run dir.
        config: ``config.yaml`` flattened to dotted keys (:func:`flatten`).
        summary: ``summary.json``.
        hardware: ``hardware.json`` ({} when the run has none).
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    hardware: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics the model logged at the end (``summary["metrics"]``), by name."""
        return dict(self.summary.get("metrics") or {})

    @property
    def objective(self) -> dict[str, Any]:
        """``{"metric", "mode", "best"}`` of the run's objective."""
        return dict(self.summary.get("objective") or {})


def find_runs(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """The run dirs at or below ``folder``: ``(finished, unfinished)``, each sorted by path.

    A run dir holds ``config.yaml``; a finished one also ``summary.json`` (a run stopped by a
    signal or an error has none). Hidden folders (Hydra's ``.hydra/config.yaml``) are skipped,
    so a multirun dir (``<time>/<job>/``) and a sweep dir (``trial_NNN/``) give their runs.
    """
    folder = Path(folder)
    found = [folder] if (folder / "config.yaml").is_file() else []
    found += [
        p.parent
        for p in sorted(folder.rglob("config.yaml"))
        if p.parent != folder
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    finished = [p for p in found if (p / "summary.json").is_file()]
    return finished, [p for p in found if p not in finished]


def _load(path: Path, loader: Any) -> Any:
    try:
        return loader(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise RunFileError(f"cannot read {path} ({' '.join(str(e).split())})") from None


def read_run(path: str | Path) -> SavedRun:
    """The run in ``path``; RunFileError (one line) when config.yaml or summary.json is missing
    or broken."""
    path = Path(path)
    for name in ("config.yaml", "summary.json"):
        if not (path / name).is_file():
            raise RunFileError(
                f"{path} is not a finished run: it has no {name} (a run dir holds config.yaml "
                "and summary.json)"
            )
    config = _load(path / "config.yaml", yaml.safe_load) or {}
    hardware_file = path / "hardware.json"
    hardware = _load(hardware_file, json.loads) if hardware_file.is_file() else {}
    return SavedRun(path, flatten(config), _load(path / "summary.json", json.loads), hardware)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and empty mappings are values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def relative_paths(config: dict[str, Any]) -> dict[str, Any]:
    """The config with each path under the run's own dir (``paths.output_dir``) or its root
    (``paths.root_dir``) written relative to it (``<run dir>/checkpoints``), so that two runs
    written to different places compare equal on ``callbacks.*.dirpath``,
    ``trainer.default_root_dir``, ``logger.*.save_dir``, ``data.cache_dir``."""
    bases = [(str(config[k]).rstrip("/"), name)
             for k, name in (("paths.output_dir", RUN_DIR), ("paths.root_dir", ROOT_DIR))
             if config.get(k)]  # fmt: skip

    def rel(value: Any) -> Any:
        if isinstance(value, str):
            for base, name in bases:
                if value == base or value.startswith(base + "/"):
                    return name + value[len(base) :]
        elif isinstance(value, list):
            return [rel(v) for v in value]
        return value

    return {key: rel(value) for key, value in config.items()}


def differing_keys(
    configs: Iterable[dict[str, Any]], not_compared: Iterable[str] = NOT_COMPARED
) -> list[str]:
    """The flattened keys whose values differ between the configs (a key that some lack
    differs), in the order they first appear; paths compare relative to each run's own dir
    (:func:`relative_paths`), and keys matching a ``not_compared`` pattern are left out."""
    configs = [relative_paths(c) for c in configs]
    patterns = tuple(not_compared)
    keys = dict.fromkeys(k for c in configs for k in c)
    return [
        key
        for key in keys
        if not any(fnmatch(key, p) for p in patterns)
        and len({json.dumps(c.get(key, "<absent>"), sort_keys=True) for c in configs}) > 1
    ]


def is_seed(key: str) -> bool:
    """A seed: ``seed`` at any depth (``seed``, and ``data.seed``, which follows it)."""
    return key.rpartition(".")[2] == "seed"
