"""Run ``python -m recipe.atesd.eval.evaluate`` and SIGKILL its main process right after the first store
append that brings the file to at least ``K`` rows: a kill at a known point, not a race with the poll.

Usage: ``python tests/kill_after_rows.py K key=value ...`` (the evaluate overrides). The engine processes
are left running, as after a real ``kill -9`` of the driver; the test's stack cleanup reaps them.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # as ``python -m`` from the repository root would
from recipe.atesd.eval.store import GenerationStore  # noqa: E402 - after the path fix above

KILL_AFTER = int(sys.argv.pop(1))
append = GenerationStore.append


def append_then_die(self, rows):
    append(self, rows)  # flushed and fsynced: the rows a real kill at this point would leave on disk
    if len(self.rows) >= KILL_AFTER:
        os.kill(os.getpid(), signal.SIGKILL)


GenerationStore.append = append_then_die
runpy.run_module("recipe.atesd.eval.evaluate", run_name="__main__", alter_sys=True)
