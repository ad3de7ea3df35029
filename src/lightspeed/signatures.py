"""Reads a class's constructor signature from its source file, and checks values against it.

The config check runs before torch is imported (that takes seconds; a typo should cost a
fraction of one), so the target's module is found with ``importlib.util.find_spec`` on its
top-level package and parsed with :mod:`ast`. Re-exports are followed; ``**kwargs`` forwarded
to ``super().__init__`` takes the base's parameters; annotations are evaluated against a small
vocabulary (builtins, ``typing``, :mod:`lightspeed.constraints`), anything else is ``Any``.
What cannot be read (a C extension, a dynamic class) gives ``None`` and is checked when built.
"""

from __future__ import annotations

import ast
import atexit
import collections.abc
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import sys
import tempfile
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from lightspeed import constraints
from lightspeed.constraints import Range
from lightspeed.errors import ConfigError

MAX_DEPTH = 8  # re-exports and base classes followed before giving up


@dataclass
class Signature:
    """Parameters of a constructor: ``{name: annotation}``; ``open`` if it takes ``**kwargs``
    that could not be resolved (any key is then accepted)."""

    target: str
    params: dict[str, Any] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    open: bool = False


class _Lenient:
    """Stands for a name outside the vocabulary: every use of it is ``Any``."""

    def __getattr__(self, name: str) -> Any:
        return Any

    def __getitem__(self, item: Any) -> Any:
        return Any

    def __eq__(self, other: object) -> bool:  # every unknown name is the same "anything"
        return isinstance(other, _Lenient)

    def __hash__(self) -> int:
        return hash(_Lenient)


_VOCABULARY: dict[str, Any] = {
    **{n: getattr(typing, n) for n in typing.__all__ if not n.startswith("_")},
    **{n: getattr(collections.abc, n) for n in collections.abc.__all__},
    **{n: getattr(constraints, n) for n in constraints.__all__},
    **{t.__name__: t for t in (int, float, bool, str, bytes, list, tuple, dict, set)},
    "None": None,
    "Path": str,  # a path in a config is a string
    "typing": typing,
}


class _Namespace(dict):
    def __missing__(self, key: str) -> Any:
        return _Lenient()


def evaluate_annotation(node: ast.expr | None) -> Any:
    """The annotation as a typing object, or ``Any`` when it uses names we do not know."""
    if node is None:
        return Any
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "quoted" annotation
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return Any
    try:
        code = compile(ast.Expression(body=node), "<annotation>", "eval")
        value = eval(code, {"__builtins__": {}}, _Namespace(_VOCABULARY))
    except Exception:  # unions of unknown names and the like: be lenient
        return Any
    return Any if isinstance(value, _Lenient) else value


def _module_file(module: str) -> Path | None:
    """Source file of ``module`` found from its top-level package, importing nothing."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for base in spec.submodule_search_locations or []:
        path = Path(base, *rest)
        for candidate in (path / "__init__.py", path.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


@functools.cache
def _parse(path: Path) -> ast.Module | None:
    """The file's skeleton (see :func:`_skeleton`), from the cache of earlier runs when the file
    is unchanged: parsing the sources a default config names (Lightning's trainer, torch's
    optimisers and schedules: 28 files) took 0.25 s of every start; the skeletons take 0.01 s."""
    try:
        stat = path.stat()
        stamp = [stat.st_mtime_ns, stat.st_size]
        cached = _SKELETONS.get(str(path), stamp)
        if cached is not None:
            return ast.parse(cached, filename=str(path))
        tree = _skeleton(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    _SKELETONS.put(str(path), stamp, ast.unparse(tree))
    return tree


def _skeleton(tree: ast.Module) -> ast.Module:
    """What the reading here uses of a module: its top-level imports, functions (signature
    only) and classes (bases and ``__init__``, whose body keeps only its
    ``super().__init__(...)`` calls)."""
    body: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            body.append(stmt)
        elif isinstance(stmt, ast.FunctionDef):
            body.append(_header(stmt, [ast.Pass()]))
        elif isinstance(stmt, ast.ClassDef):
            init = next((s for s in stmt.body if getattr(s, "name", "") == "__init__"), None)
            members: list[ast.stmt] = [ast.Pass()]
            if isinstance(init, ast.FunctionDef):
                calls = [n for n in ast.walk(init) if _is_super_init(n)]
                members = [_header(init, [ast.Expr(c) for c in calls] or [ast.Pass()])]
            cls = ast.ClassDef(stmt.name, stmt.bases, stmt.keywords, members, [])
            cls.type_params = []  # Python >= 3.12 unparses it
            body.append(cls)
    return ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))


def _header(func: ast.FunctionDef, body: list[ast.stmt]) -> ast.FunctionDef:
    header = ast.FunctionDef(func.name, func.args, body, [], func.returns)
    header.type_params = []
    return header


def _is_super_init(node: ast.AST) -> bool:
    method = node.func if isinstance(node, ast.Call) else None
    return (
        isinstance(method, ast.Attribute)
        and method.attr == "__init__"
        and isinstance(method.value, ast.Call)
        and ast.unparse(method.value.func) == "super"
    )


class _SkeletonCache:
    """Skeleton sources by file path and (mtime, size), in one JSON file under
    ``$LIGHTSPEED_CACHE_DIR`` (default ``$XDG_CACHE_HOME/lightspeed``, ``~/.cache/lightspeed``),
    written at exit when something was added. A cache that cannot be read or written is
    left alone: the files are parsed."""

    VERSION = 2

    def __init__(self) -> None:
        self._entries: dict[str, list] | None = None
        self._file: Path | None = None  # where the entries came from, and go back to
        self._dirty = False

    @staticmethod
    def path() -> Path:
        root = os.environ.get("LIGHTSPEED_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lightspeed"
        )
        version = f"{sys.version_info[0]}{sys.version_info[1]}"
        return Path(root) / f"signature_skeletons-v{_SkeletonCache.VERSION}-py{version}.json"

    def _load(self) -> dict[str, list]:
        if self._entries is None:
            self._file = self.path()
            try:
                entries = json.loads(self._file.read_text(encoding="utf-8"))
                self._entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def get(self, path: str, stamp: list[int]) -> str | None:
        entry = self._load().get(path)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp:
            return entry[1] if isinstance(entry[1], str) else None
        return None

    def put(self, path: str, stamp: list[int], source: str) -> None:
        self._load()[path] = [stamp, source]
        if not self._dirty:
            self._dirty = True
            atexit.register(self.save)

    def save(self) -> None:
        self._load()
        target = self._file or self.path()
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._load(), f)
            os.replace(tmp, target)  # a reader sees the old or the new file, whole
        except OSError:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._dirty = False


_SKELETONS = _SkeletonCache()


def _absolute(module: str, path: Path, imp: ast.ImportFrom) -> str:
    """The absolute module name of ``from <imp.module> import ...`` inside ``module``."""
    if not imp.level:
        return imp.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - imp.level + 1]
    return ".".join([*package, imp.module] if imp.module else package)


def _find(module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
    """The definition of ``module.name`` (a class or function), following re-exports."""
    path = _module_file(module)
    tree = _parse(path) if path else None
    if tree is None or depth > MAX_DEPTH:
        return None
    for stmt in tree.body:
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef)) and stmt.name == name:
            return module, stmt
    module, _, name = (_resolve_name(module, ast.Name(name)) or "").rpartition(".")
    return _find(module, name, depth + 1) if module else None


def _resolve_name(module: str, expr: ast.expr) -> str | None:
    """``a.b.C`` that a base-class expression (``C``, ``L.C``, ``mod.C``) refers to."""
    path = _module_file(module)
    tree = _parse(path) if path else None
    if tree is None:
        return None
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.insert(0, expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    head = expr.id
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == head and not parts:
            return f"{module}.{head}"
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if (alias.asname or alias.name) == head:
                    return ".".join([_absolute(module, path, stmt), alias.name, *parts])
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if (alias.asname or alias.name.split(".")[0]) == head:
                    base = alias.name if alias.asname else head
                    return ".".join([base, *parts])
    return None


def _forwards_to_super(func: ast.FunctionDef, kwarg: str) -> bool:
    """True when ``func`` calls ``super().__init__(..., **kwarg)``."""
    for node in ast.walk(func):
        if _is_super_init(node):
            return f"**{kwarg}" in map(ast.unparse, node.keywords)
    return False


def _base_signatures(module: str, cls: ast.ClassDef, depth: int) -> Iterator[Signature]:
    """Signatures of the bases of ``cls`` that can be read, in order."""
    for base in cls.bases:
        resolved = _resolve_name(module, base)
        inherited = read_signature(resolved, depth + 1) if resolved else None
        if inherited is not None:
            yield inherited


@functools.cache
def read_signature(target: str, depth: int = 0) -> Signature | None:
    """The constructor signature of ``target`` (``package.module.Name``), or None."""
    module, _, name = target.rpartition(".")
    found = _find(module, name) if module and depth <= MAX_DEPTH else None
    if found is None:
        return None
    module, node = found
    sig = Signature(target)
    if isinstance(node, ast.ClassDef):
        init = next((s for s in node.body if getattr(s, "name", "") == "__init__"), None)
        if not isinstance(init, ast.FunctionDef):  # inherits __init__: the first base that reads
            inherited = next(_base_signatures(module, node, depth), None)
            if inherited is not None:
                return dataclasses.replace(inherited, target=target)
            return Signature(target, open=True) if node.bases else sig
        func, skip = init, 1  # self
    else:
        func, skip = node, 0
    args = func.args
    positional = [*args.posonlyargs, *args.args][skip:]
    defaults = [None] * (len(positional) - len(args.defaults)) + [*args.defaults, *args.kw_defaults]
    for arg, default in zip([*positional, *args.kwonlyargs], defaults, strict=True):
        sig.params[arg.arg] = evaluate_annotation(arg.annotation)
        if default is None:
            sig.required.add(arg.arg)
    if args.kwarg is not None:
        sig.open = True
        if isinstance(node, ast.ClassDef) and _forwards_to_super(func, args.kwarg.arg):
            bases = (b for b in _base_signatures(module, node, depth) if b.params)
            inherited = next(bases, None)
            if inherited is not None:
                sig.params = {**inherited.params, **sig.params}
                sig.open = inherited.open
    return sig


def _conforms(value: Any, tp: Any) -> bool:
    if tp is Any or isinstance(tp, _Lenient):
        return True
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        ranges = [m for m in meta if isinstance(m, Range)]
        return _conforms(value, base) and all(r.accepts(value) for r in ranges)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, t) for t in typing.get_args(tp))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if tp is None or tp is type(None):
        return value is None
    if tp in (int, float):  # an int is a float; a bool is neither
        return isinstance(value, (int, tp)) and not isinstance(value, bool)
    cls = origin or tp
    abc = collections.abc
    if cls in (list, tuple, abc.Iterable, abc.Sequence):
        return isinstance(value, (list, tuple))
    if cls in (dict, abc.Mapping):
        return isinstance(value, dict)
    return cls is abc.Callable or not isinstance(cls, type) or isinstance(value, cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        return " ".join([_describe(base), *(m.describe() for m in meta if isinstance(m, Range))])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is None or tp is type(None):
        return "null"
    return getattr(origin or tp, "__name__", str(tp))


def check_value(key: str, value: Any, tp: Any) -> None:
    """ConfigError naming ``key`` when ``value`` does not fit annotation ``tp``.

    A value of the right type outside an annotated range gets the range ('must be > 0').
    """
    if _conforms(value, tp):
        return
    union = typing.get_origin(tp) in (Union, types.UnionType)
    for option in typing.get_args(tp) if union else [tp]:
        if typing.get_origin(option) is Annotated:
            base, *meta = typing.get_args(option)
            if _conforms(value, base):  # so one of its ranges refuses the value
                bad = next(r for r in meta if isinstance(r, Range) and not r.accepts(value))
                raise ConfigError(f"{key}={value} {bad.describe()}")
    raise ConfigError(f"{key}={value!r} has the wrong type: expected {_describe(tp)}")
