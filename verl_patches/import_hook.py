"""Run a patch right after a module is first imported (or at once, when it already is).

Some patch targets cannot be imported early: importing them pulls in vLLM (seconds, hundreds of MB)
in processes that never use it, or they are only imported later inside vLLM's own worker
processes. :func:`when_imported` registers a callback on a module name; a ``sys.meta_path`` finder
wraps that module's loader so the callback runs after the module body executes and before any other
module can bind names from it.
"""

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable

_pending: dict[str, list[Callable[[object], None]]] = {}


class _PostImportLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for callback in _pending.pop(module.__name__, []):
            callback(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PostImportLoader(spec.loader)
                return spec
        return None


_FINDER = _PostImportFinder()


def when_imported(module_name: str, callback: Callable[[object], None]) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (now, if it already is)."""
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__spec__", None) is not None and module_name not in _pending:
        callback(module)
        return
    _pending.setdefault(module_name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
