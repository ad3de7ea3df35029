"""The entry's side of a sweep: check the command, build the search, run it, one-line errors."""

from __future__ import annotations

import logging
import sys
from typing import Any

from lightspeed.errors import ConfigError, UserError
from lightspeed.run.resume import override_key
from lightspeed.sweep.study import in_trials


def _console_logging() -> logging.Handler | None:
    """A console handler on the root logger, unless one is there; the one added, to remove."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
           for h in root.handlers):  # fmt: skip
        return None
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(
        logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s", "%H:%M:%S")
    )
    root.addHandler(console)
    return console


def run_sweep(cfg: Any, argv: list[str]) -> int:
    """The entry's sweep: ``cfg.hparams_search`` is the search, ``argv`` the command's
    overrides; the exit status."""
    import hydra

    try:
        if cfg.task != "fit":
            raise ConfigError(f"hparams_search runs fits; task={cfg.task} cannot be searched")
        given = [a for a in argv if override_key(a).split(".")[0] in ("resume", "ckpt_path")
                 or override_key(a) == "hydra.run.dir"]  # fmt: skip
        if given:
            raise ConfigError(
                f"hparams_search with {given[0]}: each trial is a new fit in the study's folder; "
                "drop it (the same command continues an interrupted study)"
            )
        check_one_device(
            cfg, "hparams_search", "trials", "Hydra's multirun for multi-device trials"
        )
        node = {k: v for k, v in cfg.hparams_search.items() if k != "_target_"}
        from omegaconf import OmegaConf

        search = hydra.utils.get_class(cfg.hparams_search._target_)(
            **OmegaConf.to_container(OmegaConf.create(node), resolve=True)
        )
        console = _console_logging()
        command = [a for a in argv if in_trials(a)]
        try:
            return search.run(cfg, command)
        finally:  # an in-process caller keeps its own logging as it was
            if console is not None:
                logging.getLogger().removeHandler(console)
    except ImportError as e:
        print(
            f"lightspeed: error: hparams_search needs optuna ({e}): "
            ".venv/bin/pip install -e '.[sweep]'",
            file=sys.stderr,
        )
        return 2
    except UserError as e:
        print(f"lightspeed: error: {e}", file=sys.stderr)
        return 2


def check_one_device(cfg: Any, what: str, fits: str, instead: str) -> None:
    """Fits run one after another in this process, each on one device (Lightning keeps a
    multi-device fit's process group: a second one in the same process cannot start)."""
    t = cfg.trainer
    devices, nodes = t.get("devices", 1), t.get("num_nodes", 1)
    count = len(devices) if isinstance(devices, (list, tuple)) else devices
    if (isinstance(count, int) and count > 1) or nodes > 1 or "ddp" in str(t.get("strategy")):
        raise ConfigError(
            f"{what} runs its {fits} in this process, one device each, not "
            f"trainer.devices={devices} trainer.num_nodes={nodes}: use one device "
            f"(trainer=cpu or trainer=gpu), or {instead}"
        )
