"""A model directory's identity: the SHA-256 of every file, and a manifest that pins them. Pure python.

The **model hash** of a directory is the SHA-256 of its file list in ``sha256sum`` format, sorted by path::

    model_sha256 = sha256( "".join(f"{sha256(file)}  {relative path}\\n" for file in sorted files) )

over every regular file below the directory except :data:`MANIFEST` itself — so a shell reproduces it with
``(cd DIR && find . -type f ! -name MANIFEST.json -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum) | sha256sum``.
Two directories with the same hash hold the same bytes under the same names.

A **manifest** (``MANIFEST.json`` inside the directory) records ``files`` (path → SHA-256), ``model_sha256``
and whatever describes the artifact (how it was built, what it measures). :func:`verify` checks a directory
against its manifest; a missing, changed or unlisted file is a :class:`ManifestError` naming the file and,
for a changed one, both hashes. The shipped toy model (``models/toy-qwen3/``, ``recipe/atesd/toy/shipped.py``)
is the manifest this was written for; :func:`model_record` is what every run records of the model it used.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path

from recipe.atesd import REPO_ROOT

MANIFEST = "MANIFEST.json"
# A local model directory without a manifest is hashed only up to this size (a 1.7B bf16 checkpoint is
# 3.4 GiB: hashing it at every start would cost tens of seconds on shared storage); above, the record says so.
HASH_LIMIT_BYTES = 2 * 2**30


class ManifestError(ValueError):
    """A directory does not match its manifest (the message names the file and the hashes)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.rglob("*") if p.is_file() and p.relative_to(directory).as_posix() != MANIFEST),
        key=lambda p: p.relative_to(directory).as_posix(),
    )


def file_hashes(directory: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``directory`` except the manifest, sorted by path."""
    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in _files(directory)}


def model_sha256(hashes: dict[str, str]) -> str:
    """The model hash of a ``{path: sha256}`` listing (module docstring)."""
    listing = "".join(f"{digest}  {path}\n" for path, digest in sorted(hashes.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not JSON ({err})") from err
    for key in ("files", "model_sha256"):
        if key not in manifest:
            raise ManifestError(f"{path}: no {key!r} field")
    if model_sha256(manifest["files"]) != manifest["model_sha256"]:
        raise ManifestError(f"{path}: 'model_sha256' is not the hash of its 'files' listing")
    return manifest


def verify(directory: str | Path, manifest: dict | None = None) -> dict:
    """Check every file of ``directory`` against ``manifest`` (default: its own ``MANIFEST.json``); return
    the manifest. Raises :class:`ManifestError` naming the first missing, changed or unlisted file."""
    directory = Path(directory)
    manifest = read_manifest(directory) if manifest is None else manifest
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing (the manifest lists it with sha256 {expected})")
        found = sha256_file(path)
        if found != expected:
            raise ManifestError(f"{path}: sha256 {found}, but the manifest says {expected}")
    unlisted = sorted(set(file_hashes(directory)) - set(manifest["files"]))
    if unlisted:
        raise ManifestError(
            f"{directory / unlisted[0]}: not in the manifest ({len(unlisted)} unlisted file(s))"
        )
    return manifest


def model_record(path: str | Path) -> dict:
    """What a run records of its model: ``{"path", "sha256", "source"}``.

    ``source`` is ``"manifest"`` (the directory has one; verified here, so a changed file fails the run's
    start), ``"hashed"`` (a local directory of at most :data:`HASH_LIMIT_BYTES`, hashed now), or why there
    is no hash (``"not a local directory"``, e.g. a hub name; ``"larger than 2 GiB"``), with ``sha256`` None.
    """
    directory = Path(path)
    record = {"path": str(directory.resolve()) if directory.is_dir() else str(path)}
    if not directory.is_dir():
        return {**record, "sha256": None, "source": "not a local directory"}
    if (directory / MANIFEST).is_file():
        return {**record, "sha256": verify(directory)["model_sha256"], "source": "manifest"}
    if sum(p.stat().st_size for p in _files(directory)) > HASH_LIMIT_BYTES:
        return {**record, "sha256": None, "source": f"larger than {HASH_LIMIT_BYTES / 2**30:g} GiB"}
    return {**record, "sha256": model_sha256(file_hashes(directory)), "source": "hashed"}


# ------------------------------------------------------------------------------------ a run's model record
RUN_MODEL = "model.json"  # in a run's checkpoint root (trainer.default_local_dir): the model it started from


def record_run_model(model_path: str | Path, checkpoint_root: str | Path, resuming: bool) -> dict:
    """The entry points call this before training: :func:`model_record` of ``model_path``, written to
    ``<checkpoint_root>/model.json`` when the run starts, returned in any case. ``resuming`` (the start
    continues from a checkpoint): the root's record must name the same model hash, else a ValueError naming
    both (the run's start and its teacher are that model; resuming its checkpoints from another would mix two
    runs); a root without a record (a checkpoint made before records existed, or copied without it) is
    resumed without writing one — the model of that run's start is not known, and the attempt says so."""
    record = model_record(model_path)
    path = Path(checkpoint_root) / RUN_MODEL
    earlier = read_run_model(checkpoint_root)
    if resuming and earlier is None:
        print(
            f"[atesd] resuming a run that recorded no model ({path} absent): its start model stays unrecorded"
        )
        return record
    if resuming and earlier.get("sha256") != record["sha256"]:
        raise ValueError(
            f"{path}: this run started from model {earlier.get('sha256')} ({earlier.get('path')}), not "
            f"{record['sha256']} ({record['path']}): resume it with its own model, or start a new run "
            "(trainer.resume_mode=disable or another trainer.default_local_dir)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_MODEL}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"[atesd] model {record['sha256'] or '(no hash: ' + record['source'] + ')'} ({record['path']})")
    return record


def read_run_model(checkpoint_root: str | Path) -> dict | None:
    """The model record of a run's checkpoint root, or None where the run recorded none."""
    path = Path(checkpoint_root) / RUN_MODEL
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def cpu_model() -> str:
    """The machine's CPU model name (``/proc/cpuinfo``; else ``platform.processor()``): a model's build and a run
    record it, since another CPU rounds differently (docs/toy.md, "The model")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_state(repo: Path = REPO_ROOT) -> dict:
    """``{"commit", "dirty"}`` of the repository the recipe runs from (None, None outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}
