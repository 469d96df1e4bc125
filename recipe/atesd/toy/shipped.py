"""The toy world's model ships with the repository (``models/toy-qwen3/``): install it, or rebuild it and compare.

``python -m recipe.atesd.toy.shipped install [--to artifacts/toy-qwen3]`` (``make toy``): verify the shipped
files against ``models/toy-qwen3/MANIFEST.json`` (``recipe/atesd/data/manifest.py``: a missing or changed file
is an error naming it and both hashes), copy them to where the recipe reads the model
(``recipe/atesd/config/world/toy.yaml``: ``artifacts/toy-qwen3``) and verify the copy. Seconds, no pretraining;
an installed copy that already matches is left alone.

``python -m recipe.atesd.toy.shipped rebuild [--spec default] [--seed 0] [--out DIR] [--ship]``
(``make toy-build``): pretrain a model as ``recipe/atesd/toy/pretrain.py`` does, measure its exposure figures
(``recipe/atesd/toy/exposure_curve.py``), write its own manifest, and print the figures beside the shipped
manifest's with the verdict of the world's premise on what was built (:func:`premise_failures`). It compares
behaviour, not bits: another CPU rounds differently and builds other weights (docs/toy.md). ``--ship`` makes
the rebuilt model the shipped one (a maintainer's step: commit ``models/toy-qwen3/`` and the figures).

Why shipped: the same weights on every CPU (a build is deterministic on one CPU only; the ``long`` build gave
another model, failing the premise, on another machine of the same kind), and no 4-minute build per machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from recipe.atesd import REPO_ROOT
from recipe.atesd.data.manifest import MANIFEST, cpu_model, file_hashes, model_sha256, verify

SHIPPED = REPO_ROOT / "models" / "toy-qwen3"
INSTALLED = REPO_ROOT / "artifacts" / "toy-qwen3"
NAME = "toy-qwen3"

# The world's premise (docs/toy.md, "Privileged context helps here") on held-out problems, 16 per difficulty:
STUDENT_MIN = 0.3  # c_S accuracy: the student is partially competent ...
STUDENT_GAP = 0.15  # ... and at least this far below c_T(α = 1)
REVEAL_GAIN = 0.1  # acc c_T(1) − acc c_T(0): 11 of 112 rows, far more than a CPU's last-bit greedy flips
# remainder NLL (nats/token) falls with α until both sides are below this: there every remaining token already has
# >= 99.9 % probability, and what differs between two α (~1e-4 nats; 2.0e-4 vs 2.4e-4 at α = 0.75 / 1 for one
# seed's build, docs/toy.md) is which tokens remain (the answer line, the end token), not exposure
NLL_FLOOR = 1e-3
DEPARTING_MIN = (
    0.95  # the teacher predicts a correct other-order solution's step results (a few flips allowed)
)


def summary(curve: dict) -> dict:
    """Mean over difficulties of every figure of ``exposure_curve.curve``: c_S accuracy and departing
    agreement; per α, c_T accuracy, remainder NLL and departing agreement (what a manifest records)."""

    from recipe.atesd.toy.exposure_curve import mean_over_difficulties as mean

    return {
        "student": {k: mean(v) for k, v in curve["student"].items()},
        "teacher": {a: {k: mean(v) for k, v in fig.items()} for a, fig in curve["teacher"].items()},
    }


def premise_failures(figures: dict) -> list[str]:
    """The premise conditions (constants above) that ``figures`` (a :func:`summary`) fails; [] = it holds."""
    student, teacher = figures["student"], figures["teacher"]
    alphas = sorted(teacher, key=float)
    acc = {a: teacher[a]["accuracy"] for a in alphas}
    nll = [teacher[a]["remainder_nll"] for a in alphas]
    first, last = alphas[0], alphas[-1]
    failures = []
    if not student["accuracy"] >= STUDENT_MIN:
        failures.append(f"c_S accuracy {student['accuracy']:.3f} < {STUDENT_MIN}")
    if not acc[last] >= student["accuracy"] + STUDENT_GAP:
        failures.append(
            f"c_T(α={last}) accuracy {acc[last]:.3f} < c_S {student['accuracy']:.3f} + {STUDENT_GAP}"
        )
    if not acc[last] >= acc[first] + REVEAL_GAIN:
        failures.append(
            f"c_T(α={last}) accuracy {acc[last]:.3f} < c_T(α={first}) {acc[first]:.3f} + {REVEAL_GAIN}"
        )
    for (a, x), (b, y) in zip(
        zip(alphas, nll, strict=True), zip(alphas[1:], nll[1:], strict=True), strict=False
    ):
        if not (y < x or max(x, y) < NLL_FLOOR):
            failures.append(f"remainder NLL does not fall from α={a} ({x:.4g}) to α={b} ({y:.4g})")
    for a in alphas:
        if not teacher[a]["departing_agreement"] >= DEPARTING_MIN:
            failures.append(
                f"departing agreement at α={a} {teacher[a]['departing_agreement']:.3f} < {DEPARTING_MIN}"
            )
    return failures


def measure(model_dir: str | Path) -> dict:
    """The exposure curve of the model in ``model_dir`` (fp32, greedy, 16 problems per difficulty), summarised."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe.atesd.toy.exposure_curve import curve, held_out

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return summary(json.loads(json.dumps(curve(model, tok, held_out()))))  # JSON keys, as in a manifest


def install(to: str | Path = INSTALLED, shipped: str | Path = SHIPPED) -> Path:
    """Verify ``shipped`` against its manifest and copy it to ``to`` (atomically), unless ``to`` already holds
    exactly those files; verify the copy. Returns ``to``."""
    to, shipped = Path(to), Path(shipped)
    manifest = verify(shipped)
    if to.is_dir():
        try:
            verify(to, manifest)
            print(f"[toy] {to}: the shipped model {manifest['model_sha256'][:12]} is installed")
            return to
        except ValueError as err:
            print(f"[toy] {to}: replacing it ({err})")
    staging = to.with_name(f".{to.name}.installing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(shipped, staging)
    verify(staging, manifest)
    if to.exists():
        shutil.rmtree(to)
    os.replace(staging, to)
    print(f"[toy] installed the shipped model {manifest['model_sha256'][:12]} ({shipped}) at {to}")
    return to


def write_manifest(directory: str | Path, build: dict, figures: dict) -> dict:
    """Write ``MANIFEST.json`` for the files now in ``directory``; return it."""
    directory = Path(directory)
    files = file_hashes(directory)
    manifest = {
        "name": NAME,
        "model_sha256": model_sha256(files),
        "files": files,
        "build": build,
        "figures": figures,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def side_by_side(built: dict, shipped: dict) -> str:
    """A table of the rebuilt model's figures next to the shipped manifest's."""
    rows = [("c_S accuracy", built["student"]["accuracy"], shipped["student"]["accuracy"])]
    rows.append(
        ("c_S departing", built["student"]["departing_agreement"], shipped["student"]["departing_agreement"])
    )
    for a in sorted(built["teacher"], key=float):
        b, s = built["teacher"][a], shipped["teacher"].get(a, {})
        for key, label in (
            ("accuracy", "accuracy"),
            ("remainder_nll", "rem. NLL"),
            ("departing_agreement", "departing"),
        ):
            rows.append((f"c_T(α={a}) {label}", b[key], s.get(key, float("nan"))))
    lines = [f"{'figure':<28}{'rebuilt':>10}{'shipped':>10}"]
    lines += [f"{name:<28}{x:>10.4f}{y:>10.4f}" for name, x, y in rows]
    return "\n".join(lines)


def rebuild(spec_name: str, seed: int, out: str | Path, steps: int | None = None) -> dict:
    """Pretrain into ``out``, measure, write its manifest (with the command that rebuilds it); return it."""
    import torch
    import transformers

    from recipe.atesd.toy.pretrain import SPECS, STAMP_NAME, pretrain

    spec = SPECS[spec_name] if steps is None else replace(SPECS[spec_name], steps=steps)
    out = Path(out)
    t0 = time.perf_counter()
    pretrain(out, seed, spec)
    build_s = time.perf_counter() - t0
    (out / STAMP_NAME).unlink()  # the manifest records seed and spec; the stamp only skipped a rebuild
    build = {
        "spec": spec_name,
        "spec_fields": asdict(spec),
        "seed": seed,
        "command": shlex.join(
            ["python", "-m", "recipe.atesd.toy.shipped", "rebuild", "--spec", spec_name, "--seed", str(seed)]
            + (["--steps", str(steps)] if steps is not None else [])
        ),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_model(),
        "built": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_s": round(build_s, 1),
    }
    return write_manifest(out, build, measure(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="verify and copy the shipped model (make toy)")
    inst.add_argument("--to", default=str(INSTALLED))
    reb = sub.add_parser("rebuild", help="pretrain, measure, compare with the shipped model (make toy-build)")
    reb.add_argument(
        "--spec", default="default", help="a named build of recipe/atesd/toy/pretrain.py's SPECS"
    )
    reb.add_argument("--seed", type=int, default=0)
    reb.add_argument("--steps", type=int, help="override the spec's SFT steps")
    reb.add_argument("--out", default=str(REPO_ROOT / "artifacts" / "toy-qwen3-rebuilt"))
    reb.add_argument("--ship", action="store_true", help=f"then make it the shipped model ({SHIPPED})")
    args = parser.parse_args(argv)
    if args.command == "install":
        install(args.to)
        return
    out = Path(args.out)
    if out.exists():
        parser.error(f"--out {out} exists: remove it or name another directory")
    manifest = rebuild(args.spec, args.seed, out, args.steps)
    print(f"[toy] rebuilt {out}: model sha256 {manifest['model_sha256']}, {manifest['build']['build_s']} s")
    shipped = json.loads((SHIPPED / MANIFEST).read_text()) if (SHIPPED / MANIFEST).is_file() else None
    if shipped is not None:
        same = (
            "the same bytes as" if shipped["model_sha256"] == manifest["model_sha256"] else "other bytes than"
        )
        print(
            f"[toy] {same} the shipped model {shipped['model_sha256'][:12]} (built on {shipped['build']['cpu']})"
        )
        print(side_by_side(manifest["figures"], shipped["figures"]))
    failures = premise_failures(manifest["figures"])
    verdict = "HOLDS" if not failures else "FAILS: " + "; ".join(failures)
    print(f"[toy] the world's premise on the rebuilt model ({cpu_model()}): {verdict}")
    if args.ship:
        if failures:
            sys.exit("[toy] not shipped: the premise fails on the rebuilt model")
        shutil.rmtree(SHIPPED, ignore_errors=True)
        shutil.copytree(out, SHIPPED)
        verify(SHIPPED)
        print(f"[toy] shipped: {SHIPPED} (commit it, and regenerate docs/toy's figures)")
    elif failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
