"""verl glue: the ``file`` logger backend keeps a run's metrics history on resume.

verl 0.9.1's ``verl.utils.tracking.FileLogger`` opens its JSONL with ``"wb"``, so every resumed run
truncated the metrics of the steps before its checkpoint (α per hold window, the controller's rewards).
:func:`use_resumable_file_logger` swaps the class that ``Tracking`` instantiates for one that opens the
history with :func:`recipe.atesd.tools.run_history.open_history` (append, each step once, attempt boundaries).
Path rules are verl's: ``VERL_FILE_LOGGER_PATH``, else ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``.
The swap is guarded: it refuses any verl whose ``FileLogger`` source differs from the one read here.
"""

from __future__ import annotations

import os

from verl.utils import tracking

from recipe.atesd.tools.run_history import open_history
from verl_patches._guard import Target, verify

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.utils.tracking",
    attr="FileLogger",
    source_sha="9d73d728d46d6dd5",
)
VERL_FILE_LOGGER = tracking.FileLogger  # verl's class, captured before any swap


def history_path(project_name: str, experiment_name: str) -> str:
    """Where verl's file logger writes: ``VERL_FILE_LOGGER_PATH`` or ``<root>/<project>/<experiment>.jsonl``."""
    path = os.getenv("VERL_FILE_LOGGER_PATH")
    if path is None:
        root = os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", "."))
        path = os.path.join(root, project_name, f"{experiment_name}.jsonl")
    return path


def use_resumable_file_logger(resume_step: int, model: dict | None = None, path: str | None = None) -> None:
    """From now on, ``Tracking(..., default_backend=[..., "file"])`` in this process opens the history
    for an attempt starting at checkpoint step ``resume_step`` (0: a fresh run) whose boundary record names
    ``model`` (``recipe/atesd/data/manifest.py::model_record``); at ``path`` if given (a sweep arm's,
    recipe/atesd/glue/sweep.py), else where verl's rules put it (:func:`history_path`)."""
    verify(TARGET)

    class ResumableFileLogger(VERL_FILE_LOGGER):
        """verl's FileLogger (``log``/``finish`` unchanged) over an appended, reconciled history."""

        def __init__(self, project_name: str, experiment_name: str):
            self.project_name, self.experiment_name = project_name, experiment_name
            self.filepath = path or history_path(project_name, experiment_name)
            print(f"[atesd] metrics history at {os.path.abspath(self.filepath)} (resume step {resume_step})")
            self.fp, self.attempt = open_history(self.filepath, resume_step, model=model)

    tracking.FileLogger = ResumableFileLogger
