"""Plots of benchmark CSVs (they read CSV only, so a plot can be remade from any finished run)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402, F401 (matplotlib.ticker.NullFormatter)

from parasample.bench.csvlog import read_csv  # noqa: E402

__all__ = ["ACC_COLOR", "TPUT_COLOR", "save_figure", "dual_axis_plot", "dllm_plots",
           "passk_plot", "rl_plot", "align_toy_plot", "align_lm_plot"]

# One colour per quantity, the same in every chart (guide: "identical colour/order").
ACC_COLOR, TPUT_COLOR = "tab:blue", "tab:orange"


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (PNG, 120 dpi) and close ``fig``; every benchmark plot ends here."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: line style per block cache (the colours stay those of the quantities)
CACHE_STYLE = {"none": ("o", "-"), "prefix": ("^", ":"), "dual": ("s", "--")}


def _cache_of(run_name: str) -> str:
    return run_name.split("+", 1)[1] if "+" in run_name else "none"


def dual_axis_plot(rows: list[dict], x: str, title: str, path: Path) -> Path:
    """Accuracy (left) and throughput (right) against ``x`` on a log2 axis, points annotated
    ``(acc %, tok/s)``; one pair of lines per block cache (``+dual`` rows dashed)."""
    fig, ax1 = plt.subplots(figsize=(7.5, 4.5))
    ax1.set_xscale("log", base=2)
    ax2 = ax1.twinx()
    top, xs_all = 1.0, set()
    for cache in dict.fromkeys(_cache_of(r["run_name"]) for r in rows):
        sel = sorted((r for r in rows if _cache_of(r["run_name"]) == cache),
                     key=lambda r: float(r[x]))
        xs = [float(r[x]) for r in sel]
        acc = [100 * float(r["accuracy"]) for r in sel]
        tput = [float(r["throughput"]) for r in sel]
        marker, ls = CACHE_STYLE.get(cache, ("x", "-."))
        suffix = "" if cache == "none" else f" ({cache} cache)"
        ax1.plot(xs, acc, marker=marker, ls=ls, color=ACC_COLOR, label="accuracy" + suffix)
        ax2.plot(xs, tput, marker=marker, ls=ls, color=TPUT_COLOR, label="throughput" + suffix)
        for xi, a, t in zip(xs, acc, tput, strict=True):
            ax2.annotate(f"({a:.0f}%, {t:.0f})", (xi, t), textcoords="offset points",
                         xytext=(0, 7), ha="center", fontsize=7, color="dimgray")
        top, xs_all = max([top, *tput]), xs_all | set(xs)
    ax1.set_xlabel(x.replace("_", " ") + " (log2)")
    ax1.set_ylabel("accuracy (%)", color=ACC_COLOR)
    ax1.set_ylim(0, 105)
    ax1.set_xticks(sorted(xs_all), [str(int(v)) for v in sorted(xs_all)])
    ax2.set_ylabel("throughput (tokens/s)", color=TPUT_COLOR)
    ax2.set_ylim(0, top * 1.25)
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="upper center", fontsize=8,
               bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax1.set_title(title, fontsize=10)
    return save_figure(fig, path)


def dllm_plots(out: Path, label: str = "") -> list[Path]:
    """``L-B.png`` (stage 1) and ``L-S.png`` (stage 2) from ``out/results.csv``, every cache of
    the run in each."""
    rows = read_csv(out / "results.csv")
    s1 = [r for r in rows if r["run_name"].startswith("stage1")]
    s2 = [r for r in rows if r["run_name"].startswith("stage2")]
    paths = []
    if s1:
        paths.append(dual_axis_plot(s1, "block_length", f"L-B: block sweep, threshold decoding, "
                                    f"one nominal step per block {label}", out / "L-B.png"))
    if s2:
        paths.append(dual_axis_plot(s2, "steps", f"L-S: step sweep, B = 32, fixed steps {label}",
                                    out / "L-S.png"))
    return paths


SAMPLER_STYLE = {"iid": ("black", "o-"), "sobol": ("tab:blue", "s-"),
                 "lattice": ("tab:green", "^-"), "antithetic": ("tab:red", "v-"),
                 "arithmetic": ("tab:purple", "D-"), "stratified": ("tab:orange", "P-")}


def passk_plot(out: Path) -> Path | None:
    """``passk.png`` from ``out/passk.csv``: pass@k against k (log2), one line per sampler with
    +- 1 SE bars, one panel per model/task."""
    rows = read_csv(out / "passk.csv")
    panels = list(dict.fromkeys((r["model"], r["task"]) for r in rows))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, (model, task) in zip(axes[0], panels, strict=True):
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            sel = sorted((r for r in rows if (r["model"], r["task"], r["sampler"]) ==
                          (model, task, sampler)), key=lambda r: int(r["k"]))
            if not sel:
                continue
            color, style = SAMPLER_STYLE.get(sampler, ("gray", "x-"))
            ax.errorbar([int(r["k"]) for r in sel], [float(r["pass_at_k"]) for r in sel],
                        yerr=[float(r["stderr"]) for r in sel], fmt=style, color=color,
                        label=sampler, markersize=4, capsize=2, linewidth=1.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (log2)")
        ax.set_ylabel("pass@k")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{model} on {task} ({sel[0]['n_problems']} problems)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out / "passk.png")


def rl_plot(out: Path) -> Path | None:
    """``rl.png`` from ``out/rl.csv``: held-out pass@1 against GRPO step, one line per sampler
    (mean over seeds) with a band of +- 1 SE over seeds, one panel per group size."""
    import numpy as np

    rows = read_csv(out / "rl.csv")
    sizes = list(dict.fromkeys(int(r["group_size"]) for r in rows))
    if not sizes:
        return None
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4), squeeze=False)
    for ax, G in zip(axes[0], sizes, strict=True):
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            by_step: dict[int, list[float]] = {}
            for r in rows:
                if r["sampler"] == sampler and int(r["group_size"]) == G:
                    by_step.setdefault(int(r["step"]), []).append(float(r["heldout_pass1"]))
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = np.array([np.mean(by_step[s]) for s in steps])
            se = np.array([np.std(by_step[s], ddof=1) / np.sqrt(len(by_step[s]))
                           if len(by_step[s]) > 1 else 0.0 for s in steps])
            color, style = SAMPLER_STYLE.get(sampler, ("gray", "x-"))
            ax.plot(steps, mean, style, color=color, label=sampler, markersize=4)
            ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.15)
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("held-out pass@1")
        ax.set_title(f"groups of G = {G} (band: +- 1 SE over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out / "rl.png")


def _budget_means(rows: list[dict], fields: tuple[str, ...]):
    """``[budgets, len(fields)]`` means over seeds of ``fields`` at each ``budget`` of one
    curve's rows, budgets in increasing order."""
    import numpy as np

    pts: dict[int, list[list[float]]] = {}
    for r in rows:
        pts.setdefault(int(r["budget"]), []).append([float(r[f]) for f in fields])
    return np.array([np.mean(pts[b], axis=0) for b in sorted(pts)])


def align_toy_plot(out: Path) -> Path | None:
    """``align_toy.png`` from ``out/toy.csv``: TVD to the exact target against model calls
    (left) and against wallclock (right), one line per sampler (mean over seeds), with the
    i.i.d. floor; one-shot samplers (importance resampling, SMC) are one point per size."""
    rows = read_csv(out / "toy.csv")
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8))
    keys = list(dict.fromkeys((r["sampler"], r["tries_source"], r["size"]) for r in rows))
    dashes = {"iid": "-", "lattice": "--", "antithetic": ":", "arithmetic": "--"}
    colors = plt.get_cmap("tab20").colors
    families = list(dict.fromkeys(k[0] for k in keys))
    for i, (sampler, source, size) in enumerate(keys):
        curve = [r for r in rows if (r["sampler"], r["tries_source"], r["size"])
                 == (sampler, source, size)]
        mean = _budget_means(curve, ("calls", "wall_s", "tvd"))
        lm = curve[0].get("call_unit", "lm-forward") == "lm-forward"
        one_shot = sampler in ("importance-resampling", "smc", "resample-move-smc")
        label = sampler + (f" {source}" if source else "") + (
            f" K={size}" if sampler == "mt-quest" else f" n={size}" if one_shot else "")
        style = "o" if one_shot else "." + dashes.get(source, "-")
        k_shade = int(size) >= 16 if sampler == "mt-quest" else i % 2
        color = colors[(2 * families.index(sampler) + k_shade) % len(colors)]
        for ax, col in zip(axes, (0, 1), strict=True):
            if col == 0 and not lm:  # p-NCG's calls are gradient evaluations: another unit
                continue
            ax.plot(mean[:, col], mean[:, 2], style, color=color, label=label, markersize=4)
    floor = float(rows[0]["floor_tvd"])
    for ax, xlabel in zip(axes, ("LM forwards per output (sequential; p-NCG's gradient "
                                 "evaluations are another unit, not shown)", "wallclock (s)"),
                          strict=True):
        ax.axhline(floor, color="gray", ls=":", label="i.i.d. floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("TVD to the exact tilted target")
        ax.grid(alpha=0.3)
    axes[0].set_title("quality against model calls", fontsize=10)
    axes[1].set_title("quality against wallclock (this machine)", fontsize=10)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return save_figure(fig, out / "align_toy.png")


def align_lm_plot(out: Path) -> Path | None:
    """``align_lm.png`` from ``out/lm.csv``: expected reward against model calls (left) and
    wallclock (right), mean over seeds; QUEST a line over moves, one-shot samplers points."""
    rows = read_csv(out / "lm.csv")
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    models = list(dict.fromkeys(r["model"] for r in rows))
    for key in dict.fromkeys((r["model"], r["sampler"], r["size"]) for r in rows):
        mean = _budget_means([r for r in rows if (r["model"], r["sampler"], r["size"]) == key],
                             ("calls", "wall_s", "expected_reward"))
        label = (f"{key[0]} " if len(models) > 1 else "") + \
            f"{key[1]} ({'chains' if key[1] == 'quest' else 'n'}={key[2]})"
        for ax, col in zip(axes, (0, 1), strict=True):
            ax.plot(mean[:, col], mean[:, 2], ".-" if len(mean) > 1 else "o", label=label)
    for ax, xlabel in zip(axes, ("model calls (sequential)", "wallclock (s)"), strict=True):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
        ax.set_xlabel(xlabel)
        ax.set_ylabel("expected reward under the sampler")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{', '.join(models)}: reward against model calls", fontsize=10)
    axes[1].set_title("against wallclock (this machine)", fontsize=10)
    axes[1].legend(fontsize=7)
    return save_figure(fig, out / "align_lm.png")


def spec_plot(out: Path) -> Path:
    """``spec.png``: speedup over sequential sampling of each method, per model / task / batch
    (read from spec.csv; transformers' prompt lookup is against its own generate)."""
    rows = [r for r in read_csv(out / "spec.csv") if r["speedup_vs_sequential"] and r["drafter"]]
    labels = [f"{r['model']} {r['task']} {r['batch']}\n{r['drafter']}/{r['verify']}"
              + ("/adaptive" if r.get("draft_len") == "adaptive" else "") for r in rows]
    speed = [float(r["speedup_vs_sequential"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows)), 4.5))
    colors = ["tab:gray" if r["method"] == "transformers" else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), speed, color=colors)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("tokens/s over sequential (same run)")
    ax.set_title("bench spec: exact speculative decoding (gray: transformers' prompt lookup / "
                 "assisted generation vs its generate)", fontsize=9)
    fig.tight_layout()
    path = out / "spec.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
