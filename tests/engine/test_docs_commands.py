"""Every command that README.md and docs/*.md show, run as printed in a copy of the project.

The commands are the lines of the pages' ```bash blocks (a trailing ``\\`` continues a line;
``#`` lines are comments) and the ``$ `` lines of ```text blocks, whose next line is the output
they must print. Each page runs in its own copy of the checkout, in page order, as a process
in a shell, on generated data in the copy's ``data/`` (found there before any system copy).
Placeholders get what a reader would put there:

- ``<run>``: the newest fit run; for ``resume=`` a run stopped by SIGTERM just before, since
  resuming a finished run is refused (nothing to continue);
- ``<file.ckpt>``: the ``last.ckpt`` of such a stopped default-length run;
- ``/path/to/images``: 32x32 RGB class folders.

A command is run unless it needs what a CI machine lacks: ``ELSEWHERE`` names it with the test
that covers its code path. On a machine without a GPU, a GPU command must stop with its
one-line refusal. A command that is neither run nor listed fails the fast check, so a command
added to a page is run the day it is written. own_model.md and own_data.md are followed by
tests/project/test_recipes.py. Commands written inside sentences are fragments: a fast test checks the
targets, extras, scripts and overrides they name.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, copy_environment, project_copy, rgb_class_folders, write_tiny_idx

PAGES = ("README.md", "docs/data.md", "docs/reliability.md", "docs/scale-out.md")
FOLLOWED_BY_RECIPE_TESTS = ("docs/own_model.md", "docs/own_data.md", "docs/own_problem.md")
COPIED = ("src", "configs", "scripts", "tests", "Makefile", "pyproject.toml")

# command prefix -> why it does not run on a CI machine, and the test that covers its path
ELSEWHERE = {
    "make test": "it is the suite this test belongs to; CI runs it as printed",
    ".venv/bin/torchrun --nnodes=2": "two machines; tests/engine/test_ddp.py::"
    "test_torchrun_two_nodes_share_one_run_dir runs two one-process nodes on one machine",
    ".venv/bin/lightspeed -m hydra/launcher=slurm": "a SLURM cluster; tests/engine/test_slurm.py::"
    "test_slurm_launcher_config_composes_into_an_sbatch_file checks the sbatch file it writes",
    "srun ": "a SLURM allocation; tests/engine/test_slurm.py::"
    "test_time_limit_signal_requeues_and_the_requeued_job_resumes runs the same command",
}
NO_GPU = (  # the config check's line; where a GPU is but hidden (conftest), the build's
    "lightspeed: error: trainer.accelerator=gpu but this machine has no CUDA GPU; use trainer=cpu",
    "lightspeed: error: trainer.accelerator=gpu but torch sees no CUDA GPU; use trainer=cpu",
)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
TEXT_BLOCK = re.compile(r"```text\n(.*?)```", re.S)


def commands(page: str) -> list[tuple[str, str | None]]:
    """``(command, expected output line or None)`` in page order."""
    text = (REPO / page).read_text()
    found: list[tuple[int, str, str | None]] = []
    for block in BASH_BLOCK.finditer(text):
        joined = block.group(1).replace("\\\n", " ")
        for line in joined.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                found.append((block.start(), " ".join(line.split()), None))
    for block in TEXT_BLOCK.finditer(text):
        lines = block.group(1).splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.startswith("$ "):
                found.append((block.start(), line[2:].strip(), lines[i + 1].strip()))
    return [(command, output) for _, command, output in sorted(found, key=lambda f: f[0])]


def elsewhere(command: str) -> str | None:
    return next((why for prefix, why in ELSEWHERE.items() if command.startswith(prefix)), None)


def needs_gpu(command: str) -> bool:
    return bool(re.search(r"trainer=(ddp|gpu|multinode)(\s|$)", command))


def test_every_command_is_run_or_covered_elsewhere() -> None:
    """The fast half: the pages' commands parse, every exception is still shown somewhere, and
    every page with commands is run here or by the recipe tests."""
    shown = [command for page in PAGES for command, _ in commands(page)]
    assert len(shown) > 30
    for prefix in ELSEWHERE:
        assert any(c.startswith(prefix) for c in shown), f"no page shows {prefix!r} any more"
    for why in ELSEWHERE.values():
        test = re.search(r"tests/([\w/]+\.py)::(\w+)", why)
        if test:
            assert f"def {test.group(2)}(" in (REPO / "tests" / test.group(1)).read_text()
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")} | {"README.md"}
    with_commands = {p for p in pages if commands(p)}
    assert with_commands <= set(PAGES) | set(FOLLOWED_BY_RECIPE_TESTS)
    assert any(needs_gpu(c) for c in shown)


# a command written inside a sentence: `make ...`, `.venv/bin/...`, `lightspeed ...`, `bash ...`
INLINE = re.compile(r"`((?:make|lightspeed|bash|python|\.venv/bin/\w+)(?: [^`]*)?)`")


def inline_commands(page: str) -> list[str]:
    """Commands in a page's prose (outside its code blocks)."""
    text = re.sub(r"```.*?```", "", (REPO / page).read_text(), flags=re.S)
    return INLINE.findall(text)


def test_inline_commands_name_what_exists() -> None:
    """Prose commands are fragments (``...`` stands for the reader's own overrides), so they are
    checked, not run: each names a Makefile target, an extra of pyproject.toml, a script of the
    checkout, and overrides that pass the config check."""
    from lightspeed.plan import precheck

    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))
    pyproject = (REPO / "pyproject.toml").read_text()
    extras = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    pages = ["README.md", *(str(p.relative_to(REPO)) for p in sorted((REPO / "docs").glob("*.md")))]
    seen = 0
    for page in pages:
        for command in inline_commands(page):
            seen += 1
            words = shlex.split(command)
            where = f"{page}: `{command}`"
            if words[0] == "make":
                assert len(words) == 1 or words[1] in targets, where
            for word in words:
                for extra in re.findall(r"\.\[(\w+)\]", word):
                    assert re.search(rf"^{extra} = \[", extras, re.M), where
                if word.startswith("scripts/"):
                    assert (REPO / word).is_file(), where
            if words[0].endswith("lightspeed") and "..." not in command:
                precheck([w for w in words[1:] if "=" in w and not w.startswith("-")])
    assert seen > 20


def fit_runs(root: Path) -> list[Path]:
    """Fit run dirs with a ``last.ckpt``, oldest first."""
    return sorted(
        (p.parents[1] for p in root.glob("logs/fit/*/checkpoints/last.ckpt")),
        key=lambda run: (run / "checkpoints" / "last.ckpt").stat().st_mtime,
    )


def stopped_fit(root: Path, *overrides: str) -> Path:
    """A fit stopped by SIGTERM once its first ``last.ckpt`` exists (an epoch end): the run dir
    that ``resume=`` continues. Its epochs left are the margin for the signal."""
    before = set(fit_runs(root))
    proc = subprocess.Popen(
        [".venv/bin/lightspeed", "callbacks.progress_bar=null", *overrides],
        cwd=root,
        env=copy_environment(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (new := [run for run in fit_runs(root) if run not in before]):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the fit to stop ended first: {proc.communicate()[1][-2000:]}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    return new[0]


def resolve(command: str, root: Path, page: str) -> str:
    """The command with its placeholders filled, after making the run it refers to."""
    if "resume=" in command:
        # a long run stopped early; on the scale-out page a DDP fit (two gloo processes)
        ddp = ("trainer=ddp_cpu",) if page == "docs/scale-out.md" else ()
        run = stopped_fit(root, "trainer.max_epochs=8", *ddp)
    elif "<file.ckpt>" in command:
        run = stopped_fit(root)  # the default length: the command's new run is a default fit
    else:
        run = fit_runs(root)[-1] if "<run>" in command else None
    if run is not None:
        command = command.replace("<run>", run.name)
        command = command.replace("<file.ckpt>", str(run / "checkpoints" / "last.ckpt"))
    return command.replace("/path/to/images", "data/my_images")


def follow(page: str, tmp_path: Path) -> int:
    """Runs the page's commands in a fresh copy; returns how many ran."""
    root = project_copy(tmp_path, COPIED)
    write_tiny_idx(root / "data", train_size=5600)  # the default val_size (5,000) leaves 600
    rgb_class_folders(root / "data" / "my_images")
    ran = 0
    for shown, output in commands(page):
        if elsewhere(shown):
            continue
        system_copy = re.search(r"data_dir=(/usr/share/datasets/\S+)", shown)
        if system_copy and not Path(system_copy.group(1)).is_dir():
            continue  # Debian's package is not installed here (CI installs it)
        command = resolve(shown, root, page)
        proc = subprocess.run(
            command,
            shell=True,
            cwd=root,
            env=copy_environment(root),
            capture_output=True,
            text=True,
            timeout=600,
        )
        last_line = (proc.stderr.strip().splitlines() or [""])[-1]
        if needs_gpu(command) and not has_gpu():
            assert proc.returncode == 2 and last_line in NO_GPU, f"{command}\n{proc.stderr[-2000:]}"
        elif output is not None:
            assert last_line == output, f"{command}\n{proc.stderr[-2000:]}"
        else:
            assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        ran += 1
    return ran


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_commands_run_as_printed(page: str, tmp_path: Path) -> None:
    ran = follow(page, tmp_path)
    shown = [c for c, _ in commands(page) if not elsewhere(c)]
    assert ran >= len(shown) - 1  # at most the system-copy command, when it is not installed
