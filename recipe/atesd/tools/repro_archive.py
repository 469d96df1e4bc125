"""The run records of a reproduction sweep in one file (issue 27): ``python -m recipe.atesd.tools.repro_archive
ROOT ARCHIVE`` packs the sweep directory ROOT (recipe/atesd/tools/repro_sweep.py: ``ROOT/<method>/seed<s>/``)
into ARCHIVE (xz-compressed tar); recipe/atesd/tools/repro_report.py reads an archive through
:func:`sweep_dir`, with the same reader as a sweep directory (recipe/atesd/tools/repro_rows.py).

Packed: ROOT itself first (under the relative path given, so the report names each run by the path it had in
the sweep, e.g. ``runs/toy-repro/adaptive/seed0``), each moved-aside attempt (``seed<s>.incomplete-*``) as an
empty directory (the report lists only its name), the sweep stacks' records (``stacks/*.json``: start, end and
arms of each stack, for the wall-time split; not their logs), then per run (``seed<s>``) its directory and
the files ``run_row`` of recipe/atesd/tools/repro_rows.py reads: ``run.json``, the arm record, ``done.json``,
``metrics.jsonl`` and the validation dumps of step 0 and of the last step dumped
(``val_generations/<step>.jsonl``); not ``train.log``, ``checkpoints/`` or the other dumps. The two kinds of
JSONL are packed slimmed to what the readers use (repro_rows ``READ_METRICS``: each metrics record keeps its
step, its attempt boundary and the ``data`` keys under those prefixes; ``READ_GENERATION``: each dump entry
keeps the prompt and the score, not the generated text): the GRPO grid's three 200-step runs pack into 27 KB
instead of 361 KB. Every reader gets the same rows from the archive as from the directory (tests/test_repro.py).
Members come in that fixed order and carry no owner, time or mode of their own, so packing the same records gives
the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recipe.atesd.tools.repro_rows import READ_GENERATION, READ_METRICS, discover, run_row
from recipe.atesd.tools.run_dirs import DONE, GENERATIONS, METRICS, RECORD, RUN, STACKS
from recipe.atesd.tools.sweep_plans import PLANS


def members(root: Path, methods: dict | None = None) -> list[Path]:
    """The paths :func:`pack` puts into the archive, in order (module docstring); ``methods``: the sweep plan's
    table (``sweep_plans.PLANS``; None: the reproduction's)."""
    found = discover(root, methods)
    out = [root, *found.aside, *sorted((root / STACKS).glob("*.json"))]
    for _, _, d in found.runs:
        out += [d, *(d / name for name in (RUN, RECORD, DONE, METRICS) if (d / name).is_file())]
        dumps = sorted((int(p.stem), p) for p in (d / GENERATIONS).glob("*.jsonl") if p.stem.isdigit())
        out += [p for step, p in dumps if step in (0, dumps[-1][0])]
    return out


def _bare(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = info.mtime = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _metrics_record(record: dict) -> dict:
    return {**record, "data": {k: v for k, v in record["data"].items() if k.startswith(READ_METRICS)}}


def _dump_entry(entry: dict) -> dict:
    return {k: entry[k] for k in READ_GENERATION}


def slim(path: Path) -> bytes | None:
    """The bytes packed for ``path``: a metrics history or a validation dump kept to what the readers use
    (module docstring), line by line in file order; None for any other file (packed as it is)."""
    if path.name == METRICS:
        keep = _metrics_record
    elif path.parent.name == GENERATIONS and path.suffix == ".jsonl":
        keep = _dump_entry
    else:
        return None
    lines = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                lines.append(json.dumps(keep(json.loads(line))))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"{path}:{n}: not a record the readers take ({err!r})") from None
    return "".join(line + "\n" for line in lines).encode()


def pack(root: str | Path, archive: str | Path, methods: dict | None = None) -> int:
    """Write ``archive`` from the sweep directory ``root`` (a relative path: the report shows it); return the
    number of members. Written to a temporary file first: a failed pack leaves the old archive as it was."""
    root, archive = Path(root), Path(archive)
    if root.is_absolute() or ".." in root.parts or not root.parts:
        raise ValueError(
            f"{root}: give the sweep directory by its path relative to here (the report names runs by it)"
        )
    paths = members(root, methods)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    try:
        with tarfile.open(partial, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
            for path in paths:
                data = slim(path) if path.is_file() else None
                if data is None:
                    tar.add(path, arcname=str(path), recursive=False, filter=_bare)
                else:
                    info = _bare(tar.gettarinfo(path, arcname=str(path)))
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        partial.replace(archive)
    finally:
        partial.unlink(missing_ok=True)
    return len(paths)


def unpack(archive: Path, into: Path) -> Path:
    """Extract ``archive`` into ``into``; return the sweep directory there (``into`` / the first member). An
    archive that is missing, unreadable, or whose first member is not a directory holding every other member
    is a ValueError naming it."""
    try:
        with tarfile.open(archive, "r:xz") as tar:
            infos = tar.getmembers()
            if not infos or not infos[0].isdir():
                raise ValueError(f"{archive}: its first member is not a directory (not packed by {__name__})")
            root = infos[0].name
            outside = [i.name for i in infos[1:] if not i.name.startswith(root + "/")]
            if outside:
                raise ValueError(f"{archive}: {outside[0]!r} is outside the sweep directory {root!r}")
            tar.extractall(into, filter="data")
    except FileNotFoundError as err:
        raise ValueError(f"{archive}: no such sweep directory or archive") from err
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise ValueError(f"{archive}: not a readable .tar.xz archive of a sweep ({err})") from err
    return into / root


@contextmanager
def sweep_dir(source: str | Path) -> Iterator[tuple[Path, Path | None]]:
    """``(root, base)`` for reading ``source``: a sweep directory as it is (``base`` None), or an archive
    unpacked into a temporary directory ``base`` that lasts as long as the block (its runs' names in the
    archive are their paths relative to ``base``)."""
    source = Path(source)
    if source.is_dir():
        yield source, None
        return
    with tempfile.TemporaryDirectory(prefix="repro-records-") as tmp:
        yield unpack(source, Path(tmp)), Path(tmp)


@dataclass
class Records:
    """What a report reads of a sweep: one row per run (repro_rows ``run_row``), the moved-aside attempts and the
    sweep stacks' records (``stacks/*.json``, in name order: seed, then start time)."""

    rows: list[dict]
    aside: list[Path]
    stacks: list[dict]


def read_records(
    records: str | Path, difficulties: dict[str, int] | None, methods: dict | None = None
) -> Records:
    """The :class:`Records` of ``records`` (a sweep directory or its archive), runs of the plan's table
    ``methods`` (None: the reproduction's). The runs of an archive are named by their paths in it, in the rows
    and in the errors."""
    with sweep_dir(records) as (root, base):
        stacks = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((root / STACKS).glob("*.json"))]
        try:
            found = discover(root, methods)
            rows = [run_row(m, s, d, difficulties, methods) for m, s, d in found.runs]
        except ValueError as err:
            if base is None:
                raise
            raise ValueError(f"{records}: {str(err).replace(f'{base}/', '')}") from err
        aside = found.aside
        if base:
            aside = [p.relative_to(base) for p in aside]
            for row in rows:
                row["directory"] = str(Path(row["directory"]).relative_to(base))
    return Records(rows, aside, stacks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the sweep's --root, relative to here (e.g. runs/toy-repro)")
    parser.add_argument("archive", help="the archive to write (e.g. docs/toy-reproduction/runs.tar.xz)")
    parser.add_argument("--plan", default="repro", choices=sorted(PLANS), help="the sweep's --plan")
    args = parser.parse_args(argv)
    try:
        n = pack(args.root, args.archive, PLANS[args.plan].methods)
    except (ValueError, OSError) as err:
        sys.exit(f"repro_archive: {err}")
    print(f"run records: {args.archive} ({n} members, {Path(args.archive).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
