import pytest
import torch

from parasample.models import TinyTransformer, TransformerConfig, checkpoint_path, load_dllm
from parasample.models.registry import load_checkpoint
from parasample.models.train_dllm import DLLMTrainConfig, export_checkpoint, train_dllm

TINY = dict(steps=4, batch_size=4, d_model=32, n_layers=1, n_heads=2, gen_length=64,
            short_gen=64, long_every=2, warmup=1)


def test_rotary_transformer_shapes_and_context_error():
    m = TinyTransformer(TransformerConfig(vocab_size=10, d_model=16, n_layers=1, n_heads=2,
                                          max_len=8))
    assert m(torch.zeros(3, 8, dtype=torch.long)).shape == (3, 8, 10)
    with pytest.raises(ValueError, match="exceeds this model's context of 8"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="heads of even size"):
        TransformerConfig(vocab_size=10, d_model=12, n_heads=4)


def test_training_is_resumable_after_an_interruption(tmp_path):
    cfg = DLLMTrainConfig(**TINY)
    state = tmp_path / "s.pt"

    def stop_at_2(step, total, metrics):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_dllm(cfg, state, progress=stop_at_2)
    assert torch.load(state, weights_only=False)["step"] == 2  # saved on interruption
    out = train_dllm(cfg, state)
    assert out["step"] == 4
    # the interrupted-and-resumed run equals an uninterrupted one with the same seed
    ref = train_dllm(cfg, tmp_path / "ref.pt")
    for (k, a), b in zip(out["model"].state_dict().items(), ref["model"].state_dict().values(),
                         strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    ckpt = export_checkpoint(state, tmp_path / "small.pt")
    saved = torch.load(ckpt, weights_only=False)
    assert all(v.dtype == torch.float16 for v in saved["model"].values())
    model, meta = load_checkpoint(str(ckpt))
    assert meta["step"] == 4 and next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="another training config"):
        train_dllm(DLLMTrainConfig(**{**TINY, "seed": 1}), state)


def test_shipped_dllm_is_small_and_solves_held_out_chains():
    """Regression guard on the shipped checkpoint at its measured level (0.98-1.00 exact on 64
    held-out chains, see README): threshold decoding at B = 32 gets >= 90% of 32 other ones."""
    from parasample.bench.dllm import arith_task
    from parasample.diffusion import DecodeConfig, Threshold, decode

    path = checkpoint_path("dllm-arith")
    assert path.stat().st_size < 10e6
    task = arith_task("dllm-arith", 32, seed=1)
    out = decode(load_dllm(), task.encode(task.problems)[0],
                 DecodeConfig(256, 32, 8, rule=Threshold(0.9)))
    texts = task.texts(out.tokens)
    right = sum(task.correct(t, p) for t, p in zip(texts, task.problems, strict=True))
    assert right >= 29, texts


def test_shipped_dllm_chain_fills_the_window_and_solves_held_out_chains():
    """Regression guard on `dllm-chain` at its measured level (bench dllm, README): 170-character
    answers (66% of the 256 window); one token per step (dual cache) solves 7 of these 8
    held-out chains, threshold decoding at B = 32 5 of them (measured)."""
    from parasample.bench.dllm import answer_tokens, arith_task
    from parasample.diffusion import DecodeConfig, DualCache, FixedSteps, Threshold, decode

    assert checkpoint_path("dllm-chain").stat().st_size < 10e6
    task = arith_task("dllm-chain", 8, seed=1)
    ids, _ = task.encode(task.problems)
    for cfg, at_least in ((DecodeConfig(256, 32, 256, rule=FixedSteps(), cache=DualCache()), 7),
                          (DecodeConfig(256, 32, 8, rule=Threshold(0.9)), 5)):
        out = decode(task.model, ids, cfg)
        texts = task.texts(out.tokens)
        right = sum(task.correct(t, p) for t, p in zip(texts, task.problems, strict=True))
        assert right >= at_least, texts
        assert answer_tokens(out.tokens, task.eos_id) >= 0.6 * 8 * 256


def test_shipped_ar_model_is_small_and_its_pass1_is_inside_the_target_band():
    """bench passk wants a fast AR model whose temperature-1 pass@1 is between 0.2 and 0.8."""
    from parasample.models import load_ar
    from parasample.models.train_ar import ARTrainConfig, heldout_pass1

    assert checkpoint_path("ar-arith").stat().st_size < 5e6
    lm = load_ar()
    cfg = ARTrainConfig(**lm.train_config)
    assert 0.2 <= heldout_pass1(lm, cfg.task(), 128, seed=0, gen_length=cfg.gen_length) <= 0.8


def test_train_ar_tiny_run_exports_a_loadable_causal_model(tmp_path):
    from parasample.models import load_ar
    from parasample.models.train_ar import ARTrainConfig, train_ar

    cfg = ARTrainConfig(steps=3, batch_size=4, d_model=32, n_layers=1, n_heads=2, warmup=1)
    out = train_ar(cfg, tmp_path / "s.pt")
    assert out["step"] == 3 and "heldout_pass1" in out["history"][-1]
    export_checkpoint(tmp_path / "s.pt", tmp_path / "ar.pt")
    lm = load_ar(str(tmp_path / "ar.pt"))
    assert lm.model.cfg.causal and lm.train_config["steps"] == 3


def test_training_from_the_seed_is_deterministic_and_matches_the_record(tmp_path):
    """What "reproducible by the project's own training command with a fixed seed" means here.
    On one machine training is deterministic: two runs of the draft model's recipe give
    bit-identical weights. Across machines the last float32 bits of a kernel may round
    differently, so a 20-step run is compared with values recorded from this code, to 1e-6
    relative: a change to the data, the model or the optimiser moves them. (The full 350-step
    reruns on another 2-core machine matched the shipped float16 checkpoints up to one float16
    rounding step, with the same loss and held-out pass@1 at every evaluation, not bit for
    bit.)"""
    from parasample.models.train_ar import DRAFT_PRESET, ARTrainConfig, train_ar

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the shipped models were trained
    try:
        runs = [train_ar(ARTrainConfig(steps=20, **DRAFT_PRESET), tmp_path / f"{i}.state.pt")
                for i in range(2)]
    finally:
        torch.set_num_threads(threads)
    a, b = (r["model"].state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    flat = torch.cat([v.flatten().double() for v in a.values()])
    assert float(flat.sum()) == pytest.approx(331.98429890659463, rel=1e-6)
    assert float((flat ** 2).sum()) == pytest.approx(3744.3466897013764, rel=1e-6)
    assert runs[0]["history"][-1]["loss"] == pytest.approx(3.8783, abs=1e-4)
