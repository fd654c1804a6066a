"""``parasample sample``: k correlated samples for one prompt."""

from __future__ import annotations

from enum import StrEnum

import typer

from parasample.cli.common import (
    console,
    device_opt,
    dtype_opt,
    greater_than,
    lm_opt,
    seed_opt,
    setup,
    threads_opt,
)
from parasample.errors import InputError

__all__ = ["Sampler", "Verify", "load_ar_model", "make_drafter", "sample"]


class Sampler(StrEnum):
    """The names of :data:`parasample.noise.SOURCES`, spelled out so that ``--help`` does not
    import torch (tests/test_cli.py checks that the two agree)."""

    iid = "iid"
    sobol = "sobol"
    lattice = "lattice"
    antithetic = "antithetic"
    arithmetic = "arithmetic"
    stratified = "stratified"


SAMPLER_HELP = ("How the k samples share noise: iid, sobol (scrambled Sobol RQMC; k a power of "
                "two), lattice (shifted rank-1 lattice over the per-token uniforms), antithetic "
                "(pairs u, 1-u; k even), arithmetic (arithmetic sampling: one grid code point per "
                "sample drives the whole sequence), stratified (one code point in each 1/k "
                "stratum with independent jitter, carried like arithmetic's; any k). Each sample "
                "is an exact draw from the model in every case.")


SPECULATIVE_HELP = ("Speculative decoding: ngram (prompt lookup in the sample's own prompt and "
                    "output), sibling (the other samples of the prompt, then prompt lookup), or "
                    "model:NAME (a draft model with the same tokenizer: a local HF directory / "
                    ".gguf file, or a shipped AR checkpoint such as model:ar-arith-draft). Off by "
                    "default. With --verify identical the samples are those drawn without it: "
                    "exactly in float64, and in float32 for iid / sobol / lattice / antithetic "
                    "up to rare near-ties; arithmetic and stratified sampling divide their "
                    "carried residual by p(token) at every token, so in float32 a last-bit "
                    "difference of the verification pass often changes a row (bench spec's "
                    "identity.csv measures it); each sample is an exact draw either way.")
VERIFY_HELP = ("identical: keep a draft where it equals the token sequential sampling draws from "
               "the same uniform (token-identical output); rejection: speculative sampling "
               "(Chen / Leviathan), each sample an exact draw for every --sampler, keeps more "
               "model drafts; its tests and residual draws use a private i.i.d. stream per "
               "sample, so --sampler shapes only the first token and the model drafts.")


class Verify(StrEnum):
    identical = "identical"
    rejection = "rejection"


def parse_drafter(spec: str) -> tuple[str, str]:
    """``ngram`` / ``sibling`` / ``model:NAME`` -> (kind, NAME or ""); a clear error else."""
    kind, _, name = spec.partition(":")
    if (kind in ("ngram", "sibling") and not name) or (kind == "model" and name):
        return kind, name
    raise InputError(f"unknown drafter {spec!r}: use ngram, sibling or model:NAME (e.g. "
                     "model:ar-arith-draft or model:/path/to/draft-model).")


def make_drafter(spec: str, target, device="cpu", dtype=None):
    """``ngram``, ``sibling`` or ``model:NAME`` -> a drafter for ``target``."""
    from parasample.speculative import ModelDrafter, NGramDrafter, SiblingDrafter

    kind, name = parse_drafter(spec)
    if kind != "model":
        return NGramDrafter() if kind == "ngram" else SiblingDrafter()
    from parasample.models.registry import CHECKPOINT_DIR, load_ar

    if (CHECKPOINT_DIR / f"{name}.pt").is_file() or name.endswith(".pt"):
        return ModelDrafter(load_ar(name, device=device), target.vocab_size)
    return ModelDrafter(load_ar_model(name, device, dtype), target.vocab_size)


def load_ar_model(spec: str, device="cpu", dtype=None):
    """A causal LM by name (:data:`~parasample.targets.named.NAMED_LMS`) or path -> an
    HFCausalLM (cached per process)."""
    from parasample.targets.named import load_lm

    return load_lm(spec, dtype, device)


def sample(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The prompt text (the chat template "
                               "is applied for instruct models; see --chat)."),
    model: str = lm_opt("The model"),
    k: int = typer.Option(8, "-k", min=1, help="Number of samples to draw for the prompt (>= 1)."),
    sampler: Sampler = typer.Option(Sampler.iid, "--sampler", "-s", help=SAMPLER_HELP),
    temperature: float = typer.Option(1.0, "--temperature", "-t", callback=greater_than(0.0),
                                      help="Softmax temperature (> 0)."),
    top_p: float = typer.Option(1.0, "--top-p", callback=greater_than(0.0, 1.0),
                                help="Nucleus mass in (0, 1]; 1 disables it."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Tokens "
                                       "generated per sample at most (stops early at EOS)."),
    seed: int = seed_opt(0, "the uniform source"),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the model's chat template "
                              "(when it has one)."),
    engine: str = typer.Option("parasample", "--engine", help="parasample (its own engine) or "
                               "vllm (vLLM with parasample's logits processor: the same draws "
                               "from the same source; needs vLLM installed)."),
    speculative: str = typer.Option(None, "--speculative", help=SPECULATIVE_HELP),
    draft_len: int = typer.Option(4, "--draft-len", min=1, help="Tokens drafted per step with "
                                  "--speculative (>= 1; the first step's with --adaptive-draft)."),
    adaptive_draft: bool = typer.Option(False, "--adaptive-draft", help="With --speculative: "
                                        "double the draft length (up to 16) after a step that "
                                        "kept every draft, halve it after one that kept fewer "
                                        "than half; the tokens / law stay those of a fixed "
                                        "length."),
    verify: Verify = typer.Option(Verify.identical, "--verify", help=VERIFY_HELP),
    device: str = device_opt(),
    dtype: str = dtype_opt(),
    threads: int = threads_opt(2),
):
    """Draw k samples for one prompt and print them."""
    import torch

    from parasample.ancestral import SamplingConfig, generate
    from parasample.noise import make_source

    if not prompt.strip():
        raise InputError("--prompt is empty; give the text to complete.")
    dev, dt = setup(threads, device, dtype)
    if engine not in ("parasample", "vllm"):
        raise InputError(f"--engine {engine!r}: choose parasample or vllm.")
    if speculative:
        parse_drafter(speculative)  # before any model loads
    if engine == "vllm":
        if speculative:
            raise InputError("--speculative runs on parasample's engine; drop --engine vllm.")
        from parasample.integrations.vllm import require_vllm
        from parasample.targets.named import lm_dir

        require_vllm()
        vllm_dir = lm_dir(model)  # a lone .gguf or a model not installed: one line, before loading
    config = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    source = make_source(sampler.value, k, k, generator=torch.Generator().manual_seed(seed))
    with console.status(f"loading {model} ..."):
        lm = load_ar_model(model, dev, dt)
    ids, mask = lm.encode_prompts([prompt], chat=None if chat else False)
    with console.status(f"sampling {k} x {max_new_tokens} tokens ({sampler.value}, {engine}) "
                        "..."):
        if engine == "vllm":
            from parasample.integrations.vllm import VLLMEngine, load_llm

            llm = load_llm(str(vllm_dir), dtype=str(dt).removeprefix("torch."),
                           device=str(dev), max_num_seqs=max(k, 8))
            out = VLLMEngine(llm, lm.eos_id).generate(ids, mask, source, config,
                                                      samples_per_prompt=k)
        elif speculative:
            from parasample.speculative import SpecConfig
            from parasample.speculative import generate as spec_generate

            drafter = make_drafter(speculative, lm, dev, dt)
            out = spec_generate(lm, ids, mask, source, config,
                                SpecConfig(draft_len=draft_len, verify=verify.value,
                                           adaptive=adaptive_draft,
                                           max_draft_len=max(16, draft_len)), drafter,
                                samples_per_prompt=k)
        else:
            out = generate(lm, ids, mask, source, config, samples_per_prompt=k)
    if speculative:
        console.print(f"speculative ({drafter.name}, {verify.value}): {out.nfe} model calls, "
                      f"{out.acceptance:.0%} of {out.proposed} drafts kept", highlight=False)
    for i, text in enumerate(lm.decode(out.tokens)):
        logq = "" if engine == "vllm" else f", log q = {float(out.logprobs[i].sum()):.2f}"
        console.rule(f"sample {i + 1}/{k}  ({int(out.lengths[i])} tokens{logq})")
        console.print(text, highlight=False, markup=False)
