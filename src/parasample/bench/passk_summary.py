"""``parasample bench passk``: pass@k rows and samples saved, from a sampler's scored draws."""

from __future__ import annotations

import statistics

import torch

from parasample.bench.passk_tasks import PasskTask
from parasample.bench.timing import machine_fields
from parasample.metrics.passk import (
    batch_values,
    iid_curve,
    mean_and_se,
    per_problem_passk,
    samples_saved_bootstrap,
    sampling_se,
    union_bound,
)
from parasample.noise import derive_generator, source_class

__all__ = ["BOUND", "corr_passk", "passk_rows", "summary_rows"]

#: ``summary.csv``'s row of the ceiling no exact sampler can pass (:func:`union_bound`)
BOUND = "bound"
#: ``of_bound`` is left blank at k = 1 (every exact sampler has the same pass@1) and where the
#: bound is within this of i.i.d.'s pass@k (every problem near 0 or 1): no room to share
ROOM = 0.005


def _device_fields(device, dtype) -> dict:
    f = machine_fields(device, dtype)
    return {"device": f["device"], "dtype": f["dtype"]}


def corr_passk(res: dict, ks: list[int], iid: bool) -> torch.Tensor:
    """Per-problem pass@k ``[P, len(ks)]`` of a sampler's draws: from the first k samples of
    each k_max-group, or from its own k-groups where it has them (``by_k``)."""
    if "by_k" not in res:
        return per_problem_passk(res["correct"], ks, iid=iid)
    return torch.stack([per_problem_passk(res["by_k"][k]["correct"], [k], iid=iid)[:, 0]
                        for k in ks], dim=1)


def passk_rows(task: PasskTask, sampler: str, res: dict, ks: list[int]) -> list[dict]:
    """``passk.csv`` rows of one sampler on one task (``wall_s``: the whole draw's seconds).

    ``pass_at_k``, ``stderr``: the first k samples of each batch (i.i.d.: the unbiased estimator
    over all samples), SE over problems. ``sampling_se``: the first-k estimator's SE from the
    sampling alone, given the problems (from the R batches; blank when R = 1). ``stride_*``: the
    same from the stride estimator, every aligned k-block of a batch (where the sampler's
    batches split into k-blocks; else the first k again). ``zero_variance``: the fraction of
    k-blocks all correct or all wrong (a GRPO group of k with no signal), SE over problems."""
    K = res["correct"].shape[-1]
    per = corr_passk(res, ks, iid=sampler == "iid")  # [P, len(ks)]
    rows = []
    for j, k in enumerate(ks):
        own = res.get("by_k", {}).get(k, res)  # the sampler's own k-groups, where it has them
        distinct = [len({a for a in batch[:k] if a is not None})
                    for prob in own["answers"] for batch in prob]
        mean, se = mean_and_se(per[:, j])
        blocks = "by_k" not in res and source_class(sampler).splits_into(K, k)
        prefix_v = batch_values(own["correct"], k, blocks=False)  # [P, R]
        stride_v = batch_values(own["correct"], k, blocks=blocks)  # [P, R]
        s_mean, s_se = mean_and_se(stride_v.mean(1))
        zv, zv_se = mean_and_se(batch_values(own["correct"], k, blocks, "constant").mean(1))
        mc, s_mc = sampling_se(prefix_v), sampling_se(stride_v)
        rows.append({"sampler": sampler, "model": task.model_name, "task": task.name, "k": k,
                     "pass_at_k": round(mean, 5), "stderr": round(se, 5),
                     "sampling_se": "" if mc is None else round(mc, 6),
                     "stride_pass_at_k": round(s_mean, 5), "stride_stderr": round(s_se, 5),
                     "stride_sampling_se": "" if s_mc is None else round(s_mc, 6),
                     "zero_variance": round(zv, 5), "zero_variance_se": round(zv_se, 5),
                     "distinct_answers": round(statistics.fmean(distinct), 4),
                     "n_problems": per.shape[0], "tokens": int(own["tokens"][:, :, :k].sum()),
                     "wall_s": round(res["wall_s"], 2),
                     **_device_fields(getattr(task, "device", None),
                                      getattr(task, "dtype", torch.float32))})
    return rows


def summary_rows(task: PasskTask, results: dict[str, dict], ks: list[int], n_boot: int,
                 seed: int) -> tuple[list[dict], dict[str, tuple]]:
    """Samples saved at matched pass@k for every correlated sampler against i.i.d., the i.i.d.
    curve read at every integer count (:func:`~parasample.metrics.passk.samples_saved`), and
    the same for :data:`BOUND`, the most any exact sampler can save there: pass@k =
    mean over problems of min(1, k p), p each problem's pass@1 over every sampler's rows
    (:func:`~parasample.metrics.passk.union_bound`; min is concave, so with p estimated the
    bound is biased low, by little where each problem has many rows).

    ``of_bound``: the share of the bound's gain in pass@k over i.i.d. samples at that k that
    the sampler realises ((pass@k - i.i.d. pass@k) / (bound - i.i.d. pass@k); 1 for the bound).

    Returns the ``summary.csv`` rows (a k left out names why in ``dropped``) and, per sampler,
    (mean saved over k >= 2, its SE, the ks left out of that mean).
    """
    K = results["iid"]["correct"].shape[-1]
    iid = iid_curve(results["iid"]["correct"], K)  # [P, K]
    # every row of every source is an exact draw: pass@1 per problem from all of them
    p = torch.cat([r["correct"].flatten(1) for r in results.values()], 1).double().mean(1)
    curves = {s: corr_passk(res, ks, iid=False) for s, res in results.items() if s != "iid"}
    curves[BOUND] = union_bound(p, ks)  # [P, len(ks)]
    rows, heads = [], {}
    for sampler, corr in curves.items():
        g = derive_generator(seed, "boot", task.name, sampler)
        saved, se, head, head_se, dropped = samples_saved_bootstrap(ks, iid, corr,
                                                                    n_boot=n_boot, generator=g)
        heads[sampler] = (head, head_se, sorted(k for k in dropped if k >= 2))
        for j, k in enumerate(ks):
            at, base = float(corr[:, j].mean()), float(iid[:, k - 1].mean())
            room = float(curves[BOUND][:, j].mean()) - base
            rows.append({"sampler": sampler, "model": task.model_name, "task": task.name, "k": k,
                         "pass_at_k": round(at, 5), "iid_pass_at_k": round(base, 5),
                         "of_bound": round((at - base) / room, 3) if k > 1 and room > ROOM else "",
                         "samples_saved": "" if saved[j] is None else round(saved[j], 4),
                         "samples_saved_se": "" if se[j] is None else round(se[j], 4),
                         "dropped": dropped.get(k, "")})
    return rows, heads
