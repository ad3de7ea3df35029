"""The config schema read from constructor signatures, without importing the classes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lightspeed.config import check_target
from lightspeed.constraints import PositiveInt
from lightspeed.errors import ConfigError
from lightspeed.signatures import read_signature


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package of the user's own, importable by name, defining classes the way users do."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from userpkg.nets import Net as Net\n")
    (pkg / "base.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations
            from typing import Literal
            from lightspeed.constraints import PositiveInt

            class Base:
                def __init__(self, batch_size: PositiveInt = 8, mode: Literal["a", "b"] = "a"):
                    pass
            """
        )
    )
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations
            import torch
            from userpkg.base import Base

            class Net(Base):
                def __init__(self, width: int, device: torch.device | None = None, **kwargs):
                    super().__init__(**kwargs)

            class Loose(Base):
                def __init__(self, width: int = 1, **extra):
                    self.extra = extra

            class Inherits(Base):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    read_signature.cache_clear()
    yield "userpkg"
    read_signature.cache_clear()


def test_reads_own_parameters_and_forwarded_base_parameters(user_package: str) -> None:
    sig = read_signature("userpkg.Net")  # re-exported by the package's __init__
    assert sig is not None
    assert set(sig.params) == {"width", "device", "batch_size", "mode"}
    assert sig.required == {"width"}
    assert not sig.open
    assert sig.params["batch_size"] == PositiveInt
    assert sig.params["device"] is not None  # torch.device: outside the vocabulary → lenient


def test_kwargs_not_forwarded_to_the_base_leave_the_node_open(user_package: str) -> None:
    sig = read_signature("userpkg.nets.Loose")
    assert sig.open and set(sig.params) == {"width"}


def test_a_class_without_init_takes_its_base_signature(user_package: str) -> None:
    assert set(read_signature("userpkg.nets.Inherits").params) == {"batch_size", "mode"}


def test_unreadable_targets_give_none() -> None:
    assert read_signature("no_such_package.Thing") is None
    assert read_signature("math.sqrt") is None  # a C extension: checked when built


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"width": 3, "batch_sise": 4}, "did you mean 'batch_size'"),
        ({"width": 3, "batch_size": 0}, "must be > 0"),
        ({"width": "wide"}, "expected int"),
        ({"width": 3, "mode": "c"}, "expected 'a' | 'b'"),
        ({"batch_size": 2}, "needs width"),
    ],
)
def test_user_class_is_checked_with_no_registration(
    user_package: str, node: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        check_target({"_target_": "userpkg.Net", **node}, "model.net")
    assert "model.net" in str(err.value)
    assert "\n" not in str(err.value)


def test_valid_user_node_passes(user_package: str) -> None:
    check_target({"_target_": "userpkg.Net", "width": 3, "batch_size": 2, "mode": "b"}, "m")


def test_trainer_keys_come_from_lightnings_signature() -> None:
    import inspect

    import lightning

    sig = read_signature("lightning.Trainer")
    assert set(sig.params) == set(inspect.signature(lightning.Trainer.__init__).parameters) - {
        "self"
    }


def test_the_check_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys\n"
        "from lightspeed.plan import precheck\n"
        "precheck(['trainer.max_epochs=2', 'model=mlp', 'model.net.dropout=0.2'])\n"
        "heavy = [m for m in ('torch', 'lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def config_targets() -> list[str]:
    root = Path(__file__).resolve().parents[2] / "configs"
    found = {
        line.split("_target_:", 1)[1].split("#")[0].strip()
        for path in root.rglob("*.yaml")
        for line in path.read_text().splitlines()
        if "_target_:" in line
    }
    return sorted(found)


def read_all(targets: list[str]) -> dict:
    from lightspeed import signatures

    signatures._parse.cache_clear()
    read_signature.cache_clear()
    return {t: read_signature(t) for t in targets}


def fresh_cache(monkeypatch) -> None:
    """A new process's view: nothing in memory, the cache file (if any) read on first use."""
    from lightspeed import signatures

    monkeypatch.setattr(signatures, "_SKELETONS", signatures._SkeletonCache())


def test_cached_skeletons_read_the_same_signatures_as_the_full_sources(
    tmp_path: Path, monkeypatch
) -> None:
    """Every _target_ in configs/: read from the full parse, from skeletons parsed now, and
    from skeletons a later run reads back from the cache file: the same signatures."""
    from lightspeed import signatures

    monkeypatch.setenv("LIGHTSPEED_CACHE_DIR", str(tmp_path))
    targets = config_targets()
    assert len(targets) > 20
    with monkeypatch.context() as m:
        m.setattr(signatures, "_skeleton", lambda tree: tree)
        fresh_cache(m)
        full = read_all(targets)
    fresh_cache(monkeypatch)
    parsed = read_all(targets)
    signatures._SKELETONS.save()
    (cache,) = tmp_path.glob("signature_skeletons-*.json")
    fresh_cache(monkeypatch)
    reads: list[str] = []
    monkeypatch.setattr(Path, "read_text", spy_read_text(reads))
    cached = read_all(targets)
    assert full == parsed == cached
    assert sum(s is not None and bool(s.params) for s in full.values()) > 20
    assert reads == [str(cache)]  # no source file was read: every skeleton came from the cache
    read_all([])  # leave no cached parse of this test behind


def spy_read_text(reads: list[str]):
    original = Path.read_text

    def read_text(self, *args, **kwargs):
        reads.append(str(self))
        return original(self, *args, **kwargs)

    return read_text


def test_an_edited_source_is_read_again(user_package: str, tmp_path: Path, monkeypatch) -> None:
    from lightspeed import signatures

    monkeypatch.setenv("LIGHTSPEED_CACHE_DIR", str(tmp_path / "cache"))
    fresh_cache(monkeypatch)
    assert "depth" not in read_all(["userpkg.nets.Loose"])["userpkg.nets.Loose"].params
    signatures._SKELETONS.save()
    nets = tmp_path / "userpkg" / "nets.py"
    nets.write_text(nets.read_text().replace("width: int = 1,", "width: int = 1, depth: int = 2,"))
    fresh_cache(monkeypatch)
    assert "depth" in read_all(["userpkg.nets.Loose"])["userpkg.nets.Loose"].params
    read_all([])
