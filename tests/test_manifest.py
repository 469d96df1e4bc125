"""Model identity (recipe/atesd/data/manifest.py) and the shipped toy model (recipe/atesd/toy/shipped.py):
the hash, the manifest checks, what a run records, and ``make toy``'s install."""

import hashlib
import json
import shutil
import subprocess

import pytest

from recipe.atesd.data import manifest as mf
from recipe.atesd.toy import shipped


def model_dir(path, files=None):
    path.mkdir(parents=True)
    for name, text in (files or {"config.json": "{}", "weights.bin": "abc", "sub/tok.json": "[1]"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_model_hash_is_sha256sum_of_the_sorted_listing(tmp_path):
    """The documented shell command gives the same hash; the manifest itself is not part of it; a renamed or
    changed file changes it."""
    d = model_dir(tmp_path / "m")
    hashes = mf.file_hashes(d)
    assert list(hashes) == ["config.json", "sub/tok.json", "weights.bin"]
    assert hashes["weights.bin"] == hashlib.sha256(b"abc").hexdigest()
    digest = mf.model_sha256(hashes)
    shell = subprocess.run(
        "(find . -type f ! -name MANIFEST.json -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum) | sha256sum",
        shell=True,
        cwd=d,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert shell == digest
    (d / mf.MANIFEST).write_text("{}")
    assert mf.model_sha256(mf.file_hashes(d)) == digest
    (d / "weights.bin").write_text("abd")
    assert mf.model_sha256(mf.file_hashes(d)) != digest


def test_verify_names_the_file_and_both_hashes(tmp_path):
    d = model_dir(tmp_path / "m")
    manifest = shipped.write_manifest(d, build={"seed": 0}, figures={})
    assert mf.verify(d) == manifest
    good = manifest["files"]["weights.bin"]
    (d / "weights.bin").write_text("xyz")
    bad = hashlib.sha256(b"xyz").hexdigest()
    with pytest.raises(mf.ManifestError, match=rf"weights.bin: sha256 {bad}, but the manifest says {good}"):
        mf.verify(d)
    (d / "weights.bin").unlink()
    with pytest.raises(
        mf.ManifestError, match=rf"weights.bin: missing \(the manifest lists it with sha256 {good}\)"
    ):
        mf.verify(d)
    (d / "weights.bin").write_text("abc")
    (d / "extra.txt").write_text("")
    with pytest.raises(mf.ManifestError, match="extra.txt: not in the manifest"):
        mf.verify(d)
    (d / "extra.txt").unlink()
    edited = {**manifest, "files": {**manifest["files"], "config.json": "0" * 64}}
    (d / mf.MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(mf.ManifestError, match="'model_sha256' is not the hash of its 'files' listing"):
        mf.verify(d)


def test_model_record_sources(tmp_path, monkeypatch):
    """manifest (verified: a changed file fails), hashed, too large, not a directory."""
    d = model_dir(tmp_path / "m")
    plain = mf.model_record(d)
    assert plain == {
        "path": str(d.resolve()),
        "sha256": mf.model_sha256(mf.file_hashes(d)),
        "source": "hashed",
    }
    shipped.write_manifest(d, build={}, figures={})
    assert mf.model_record(d) == {**plain, "source": "manifest"}
    (d / "config.json").write_text('{"changed": 1}')
    with pytest.raises(mf.ManifestError, match="config.json: sha256"):
        mf.model_record(d)
    other = model_dir(tmp_path / "big")
    monkeypatch.setattr(mf, "HASH_LIMIT_BYTES", 5)  # the three files hold 7 bytes
    assert mf.model_record(other)["sha256"] is None
    assert mf.model_record("Qwen/Qwen3-1.7B") == {
        "path": "Qwen/Qwen3-1.7B",
        "sha256": None,
        "source": "not a local directory",
    }


def test_resuming_a_run_from_another_model_is_refused(tmp_path):
    a, b = model_dir(tmp_path / "a"), model_dir(tmp_path / "b", {"config.json": "{1}"})
    root = tmp_path / "ckpt"
    # a checkpoint without a record (older, or a step copied alone): resumed, and no record is made up for it
    assert mf.record_run_model(b, root, resuming=True)["sha256"] == mf.model_record(b)["sha256"]
    assert mf.read_run_model(root) is None
    first = mf.record_run_model(a, root, resuming=False)
    assert mf.read_run_model(root) == first
    assert mf.record_run_model(a, root, resuming=True) == first  # the same model: fine
    second = mf.model_record(b)["sha256"]
    with pytest.raises(ValueError, match=f"started from model {first['sha256']} .*not {second}"):
        mf.record_run_model(b, root, resuming=True)
    assert mf.read_run_model(root) == first  # nothing written
    assert mf.record_run_model(b, root, resuming=False)["sha256"] == second  # a new run may reuse the folder


def test_the_shipped_model_matches_its_manifest_and_installs(tmp_path):
    """What the repository ships verifies; install copies it, verifies the copy, leaves a matching copy alone
    and replaces a changed one."""
    manifest = mf.verify(shipped.SHIPPED)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    build = manifest["build"]
    assert build["spec"] == "default" and build["seed"] == 0 and "rebuild" in build["command"]
    to = shipped.install(tmp_path / "toy-qwen3")
    assert mf.model_record(to)["sha256"] == manifest["model_sha256"]
    mtime = (to / "model.safetensors").stat().st_mtime_ns
    shipped.install(to)
    assert (to / "model.safetensors").stat().st_mtime_ns == mtime  # already installed: untouched
    (to / "config.json").write_text("{}")
    shipped.install(to)
    mf.verify(to)


def test_a_corrupted_shipped_file_is_an_error_naming_it(tmp_path):
    """One flipped byte in the shipped weights: install refuses, naming the file and both hashes, and
    installs nothing."""
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    expected = json.loads((copy / mf.MANIFEST).read_text())["files"]["model.safetensors"]
    found = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(
        mf.ManifestError, match=f"model.safetensors: sha256 {found}, but the manifest says {expected}"
    ):
        shipped.install(tmp_path / "to", shipped=copy)
    assert not (tmp_path / "to").exists()


def test_premise_failures_name_each_condition():
    """The premise check (docs/toy.md) on figures that hold it and on figures that break each condition."""
    teacher = {
        "0.0": {"accuracy": 0.70, "remainder_nll": 0.1, "departing_agreement": 1.0},
        "0.5": {"accuracy": 1.0, "remainder_nll": 5e-4, "departing_agreement": 1.0},
        "1.0": {"accuracy": 1.0, "remainder_nll": 6e-4, "departing_agreement": 1.0},  # both below the floor
    }
    good = {"student": {"accuracy": 0.6, "departing_agreement": 1.0}, "teacher": teacher}
    assert shipped.premise_failures(good) == []
    copying = json.loads(json.dumps(good))
    copying["teacher"]["1.0"]["departing_agreement"] = 0.79
    assert shipped.premise_failures(copying) == ["departing agreement at α=1.0 0.790 < 0.95"]
    no_reveal = json.loads(json.dumps(good))
    no_reveal["teacher"]["0.0"]["accuracy"] = 1.0
    assert shipped.premise_failures(no_reveal) == ["c_T(α=1.0) accuracy 1.000 < c_T(α=0.0) 1.000 + 0.1"]
    rising = json.loads(json.dumps(good))
    rising["teacher"]["0.5"]["remainder_nll"] = 0.2
    assert shipped.premise_failures(rising) == ["remainder NLL does not fall from α=0.0 (0.1) to α=0.5 (0.2)"]
    competent = json.loads(json.dumps(good))
    competent["student"]["accuracy"] = 0.9
    assert shipped.premise_failures(competent) == ["c_T(α=1.0) accuracy 1.000 < c_S 0.900 + 0.15"]
