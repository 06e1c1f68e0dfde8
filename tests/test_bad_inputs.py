"""Issue 23, row by row: inputs that ended in a traceback (exit 5) now end in one line with the exit code
the README promises (3: every task skipped; 4: bad input), and what contradicted the README agrees
with it (a ``{}`` config.json, ``compare``'s exit codes, ``--ctx 256``, narrow terminals). Signals:
``test_signals``; every reader fuzzed: ``test_fuzz_readers``."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tiny_runs
from s2o_eval.cli import app
from s2o_eval.models import cache as model_cache
from s2o_eval.models import load_model
from s2o_eval.run.rundir import RunDir

from test_infinitebench import RECORDS as INFINITEBENCH_RECORDS
from test_longbench_v2 import record as longbench_record
from test_readme import section
from test_regress import good_scores, write_run


def _cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _one_line(result, code: int, *expected: str) -> str:
    """The command's one ``Error:`` line (or its ``Skipped:`` line for a suite file), checked."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    label = "Skipped" if code == 3 else "Error"
    (line,) = tiny_runs.error_lines(result.output, label)
    for text in expected:
        assert text in line, line
    return line


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("s2o_eval.models.load_model", refuse)


# -- suite data: the task is skipped in one line naming the file (exit 3: nothing else ran) ------------

def _run_task(model, task: str, data_dir: Path, runs: Path):
    return _cli("run", "--model", model, "--task", task, "--ctx", "1k", "--data-dir", data_dir, "--method", "sdpa",
                "--runs-dir", runs, "-q")


def _put(root: Path, parts: tuple[str, ...], data: bytes) -> Path:
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_longbench_data_json_that_is_not_utf8(tiny_model, tmp_path):
    text = json.dumps([longbench_record(0, words=20)]).encode()
    path = _put(tmp_path / "data", ("longbench_v2", "data.json"), text[:40] + b"\xff\xfe" + text[40:])
    _one_line(_run_task(tiny_model, "longbench-v2", tmp_path / "data", tmp_path / "runs"), 3,
              f"{path} line 1 is not UTF-8 text: replace it with the published file")


def test_an_infinitebench_line_that_is_not_utf8(tiny_model, tmp_path):
    good = json.dumps(INFINITEBENCH_RECORDS["passkey"]).encode()
    path = _put(tmp_path / "data", ("infinitebench", "passkey.jsonl"), good + b"\n" + good.replace(b"pass", b"p\xe9ss") + b"\n")
    _one_line(_run_task(tiny_model, "infinitebench:passkey", tmp_path / "data", tmp_path / "runs"), 3,
              f"{path} line 2 is not UTF-8 text: replace the file")


def test_an_infinitebench_record_without_its_context(tiny_model, tmp_path):
    record = {k: v for k, v in INFINITEBENCH_RECORDS["passkey"].items() if k != "context"}
    path = _put(tmp_path / "data", ("infinitebench", "passkey.jsonl"), json.dumps(record).encode() + b"\n")
    _one_line(_run_task(tiny_model, "infinitebench:passkey", tmp_path / "data", tmp_path / "runs"), 3,
              f"{path} line 1 is not an InfiniteBench record (it lacks context)")


@pytest.mark.parametrize("content, said", [(b'{"data": [', "is not valid JSON (Expecting value)"),
                                           (b"{}", "is not SQuAD v2's dev-v2.0.json (it lacks data)")])
def test_a_squad_file_that_is_not_json_or_is_empty(tiny_model, tmp_path, content, said):
    path = _put(tmp_path / "data", ("ruler", "squad_v2_dev.json"), content)
    _one_line(_run_task(tiny_model, "ruler:qa_1", tmp_path / "data", tmp_path / "runs"), 3, f"{path} ", said)


def test_a_hotpotqa_file_that_is_not_utf8(tiny_model, tmp_path):
    path = _put(tmp_path / "data", ("ruler", "hotpotqa_dev.json"), b'[{"question": "caf\xe9"}]')
    _one_line(_run_task(tiny_model, "ruler:qa_2", tmp_path / "data", tmp_path / "runs"), 3,
              f"{path} line 1 is not UTF-8 text")


def test_an_essay_that_is_not_utf8(tiny_model, tmp_path):
    path = _put(tmp_path / "data", ("ruler", "paul_graham_essays", "essay.txt"), b"Good essays.\nCaf\xe9 ideas.\n")
    _one_line(_run_task(tiny_model, "ruler:niah_single_2", tmp_path / "data", tmp_path / "runs"), 3,
              f"{path} line 2 is not UTF-8 text: save it as UTF-8 text, or remove it")


def test_damaged_suite_files_never_touch_the_finished_samples(tiny_model, tmp_path):
    """The same command again, each suite file damaged in turn: its task is skipped in one line, the
    finished samples of the others stay byte for byte, and nothing is evaluated again."""
    data = tmp_path / "data"
    data.mkdir()
    args = ["--task", "ruler:vt", "--task", "longbench-v2", "--task", "infinitebench:passkey",
            "--data-dir", str(data)]
    first = tiny_runs.run(tiny_model, tmp_path / "run", *args)  # the two datasets are missing: skipped
    assert first.exit_code == 0, first.output
    run = RunDir(tmp_path / "run")
    samples = run.samples_path.read_bytes()
    damages = [(("longbench_v2", "data.json"), b"\xff[]", "line 1 is not UTF-8 text"),
               (("longbench_v2", "data.json"), b"[{}]", "is not LongBench-v2's data.json (record 0 lacks _id)"),
               (("infinitebench", "passkey.jsonl"), b'{"answer": [1]}\n', "line 1 is not an InfiniteBench record")]
    for parts, content, said in damages:
        path = _put(data, parts, content)
        again = tiny_runs.run(tiny_model, tmp_path / "run", *args)
        assert again.exit_code == 0 and "Traceback" not in again.output, again.output
        assert any(line.startswith("Skipped:") and f"{path} {said}" in line for line in again.output.splitlines()), again.output
        assert run.samples_path.read_bytes() == samples and run.sessions()[-1]["evaluated"] == 0
        path.unlink()


# -- the harness's inputs: exit 4 in one line ----------------------------------------------------------

def test_regress_against_a_directory(tmp_path):
    run = write_run(tmp_path / "runs", "good", good_scores())
    (tmp_path / "baseline.json").mkdir()
    _one_line(_cli("regress", run, "--against", tmp_path / "baseline.json"), 4,
              f"Error: {tmp_path / 'baseline.json'} is a directory, not a file: restore it or rebuild it with --update")


@pytest.mark.parametrize("score", ["NaN", "Infinity", '"100"'])
def test_a_baseline_score_that_is_nan_or_not_a_number(tmp_path, score):
    run = write_run(tmp_path / "runs", "good", good_scores())
    baseline = tmp_path / "baseline.json"
    assert _cli("regress", run, "--against", baseline, "--update").exit_code == 0
    baseline.write_text(baseline.read_text().replace('"score": 100.0}', f'"score": {score}}}', 1))
    said = f"holds {score}" if score != '"100"' else "samples[0].score is a string, not a number"
    _one_line(_cli("regress", run, "--against", baseline), 4, f"Error: {baseline} ", said)


def _unwritable_dirs(tmp_path: Path) -> list[Path]:
    """Directories nothing can be written in: the kernel's (refused even to root), and where the tests do
    not run as root one without write permission."""
    places = [Path("/proc/s2o-eval-test"), Path("/sys/s2o-eval-test")]
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        places.append(locked / "inside")
    return [place for place in places if place.parent.exists()]


def test_regress_update_into_a_directory_that_cannot_be_written(tmp_path):
    run = write_run(tmp_path / "runs", "good", good_scores())
    for place in _unwritable_dirs(tmp_path):
        _one_line(_cli("regress", run, "--against", place / "baseline.json", "--update"), 4,
                  f"Error: --against {place / 'baseline.json'} cannot be ")


@pytest.mark.parametrize("out", ["/sys/x", "/proc/x"])
def test_run_out_where_nothing_can_be_written(tiny_model, tmp_path, no_model_load, out):
    if not Path(out).parent.exists():
        pytest.skip(f"no {Path(out).parent} here")
    _one_line(tiny_runs.run(tiny_model, Path(out)), 4, f"Error: --out {out} cannot be written")


def test_compare_and_report_out_where_nothing_can_be_written(tmp_path):
    a = write_run(tmp_path / "runs", "a", good_scores(), method="fa3")
    b = write_run(tmp_path / "runs", "b", good_scores())
    for place in _unwritable_dirs(tmp_path):
        _one_line(_cli("compare", a, b, "--out", place), 4, f"Error: --out {place} cannot be ")
        _one_line(_cli("report", a, "--out", place), 4, f"Error: --out {place} cannot be ")


# -- the model cache: a damaged entry is rebuilt -------------------------------------------------------

@pytest.fixture
def fake_conversion(tiny_model, tmp_path, monkeypatch):
    """A user's .gguf whose conversion copies the tiny model (the real one dequantizes for a minute: the
    cache's handling of its entries is what is tested here)."""
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    conversions = []

    def save_dequantized_model(path, reader, out_dir):
        conversions.append(out_dir)
        for name in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copy2(tiny_model / name, out_dir / name)
        return []

    def write_tokenizer(reader, path, out_dir, window):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(tiny_model / name, out_dir / name)
        return "test"

    monkeypatch.setattr("s2o_eval.models.gguf_model.save_dequantized_model", save_dequantized_model)
    monkeypatch.setattr(model_cache, "_open_gguf", lambda path: None)
    monkeypatch.setattr(model_cache, "_write_tokenizer", write_tokenizer)
    monkeypatch.setattr(model_cache, "_context_length", lambda reader: 4096)
    return gguf, conversions


def test_a_truncated_model_safetensors_in_the_cache_is_rebuilt(fake_conversion, capsys):
    gguf, conversions = fake_conversion
    load_model(str(gguf), device="cpu")
    (entry,) = (Path(os.environ[model_cache.CACHE_ENV]) / "models").iterdir()
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()

    loaded = load_model(str(gguf), device="cpu")

    assert len(conversions) == 2 and loaded.model is not None
    said = " ".join(capsys.readouterr().err.split())
    assert f"The cached {entry} is outdated or damaged: converting tiny from GGUF again" in said


def test_a_truncated_model_safetensors_in_a_model_directory_is_one_line(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _one_line(tiny_runs.run(model, tmp_path / "run"), 4,
              f"Error: could not load '{model}' (Error while deserializing header",
              "check that it holds a complete Hugging Face model")


def test_damaged_weights_elsewhere_say_how_to_clear_them():
    """Where no read_record stands guard: the Hugging Face cache names its clearing command, and our own
    cache, should it be damaged past the check, names the entry to delete."""
    from safetensors import SafetensorError

    from s2o_eval.models.loading import _load_error
    from s2o_eval.models.sources import ModelSource

    damaged = SafetensorError("Error while deserializing header: incomplete metadata")
    hub = _load_error(ModelSource("hub", "org/model", "org/model", "model", None), damaged, "org/model")
    assert str(hub) == ("model 'org/model' is damaged in the Hugging Face cache (Error while deserializing header: "
                        "incomplete metadata): remove it with `hf cache rm model/org/model` and load it again")
    ours = _load_error(ModelSource("gguf", "x.gguf", "/x.gguf", "x", "ab" * 32), damaged, "/cache/models/x-abab")
    assert str(ours).endswith("delete it (rm -r /cache/models/x-abab); the next command converts it again")


# -- what contradicted the README -------------------------------------------------------------------

def test_a_config_json_replaced_by_an_empty_object_is_rewritten(finished_run, tiny_model, tmp_path):
    run = tiny_runs.copy(finished_run, tmp_path / "run")
    samples = run.samples_path.read_bytes()
    run.config_path.write_text("{}")
    result = tiny_runs.run(tiny_model, run.path)
    assert result.exit_code == 0, result.output
    assert f"Note: {run.config_path} was unreadable: rewritten from this command" in result.output
    assert run.config() == finished_run.config()
    assert run.samples_path.read_bytes() == samples and run.sessions()[-1]["evaluated"] == 0


def test_compare_exit_codes_are_the_readmes(tmp_path):
    runs = tmp_path / "runs"
    base = write_run(runs, "base", good_scores(), method="fa3")
    row = next(line for line in section("Exit codes", "###").splitlines() if line.startswith("| `2` |"))
    assert "`compare`: the runs differ in model" in row and "share no sample" in row

    other_model = write_run(runs, "llama", good_scores(), model="llama-3.1-8b")
    _one_line(_cli("compare", base, other_model, "--out", tmp_path / "r1"), 2,
              "Error: the runs used different models (fa3: gemma-3-270m, s2o: llama-3.1-8b)")

    scores = good_scores()
    fewer_tasks = write_run(runs, "fewer", {cell: values for cell, values in scores.items() if "vt" in cell[0]})
    result = _cli("compare", base, fewer_tasks, "--out", tmp_path / "r2")
    assert result.exit_code == 0, result.output  # compared on the samples they share, with a warning
    assert "Warning: the runs cover different tasks" in result.output

    elsewhere = write_run(runs, "elsewhere", {("s2o_ruler_vt", 65536): [100.0]})
    _one_line(_cli("compare", base, elsewhere, "--out", tmp_path / "r3"), 2, "Error: the runs share no")

    reseeded = write_run(runs, "reseeded", scores)  # the same keys, other documents: another --seed
    for run, prompt in ((base, "first"), (reseeded, "another")):
        samples = run / "samples.jsonl"
        samples.write_text("".join(json.dumps(json.loads(line) | {"prompt_sha": prompt}) + "\n"
                                   for line in samples.read_text().splitlines()))
    _one_line(_cli("compare", base, reseeded, "--out", tmp_path / "r4"), 2, "different prompts")


def test_scale_of_runs_of_different_configurations_is_not_comparable(tmp_path):
    one = write_run(tmp_path / "runs", "one", good_scores())
    other = write_run(tmp_path / "runs", "other", good_scores(), method="fa3")
    _one_line(_cli("scale", one, other, "--out", tmp_path / "scale"), 2, "Error: the runs differ in configuration")


@pytest.mark.parametrize("ctx", ["256", "0", "1000"])
def test_run_refuses_a_window_shorter_than_1k(tiny_model, tmp_path, no_model_load, ctx):
    _one_line(_cli("run", "--model", tiny_model, "--task", "ruler:vt", "--ctx", ctx, "--runs-dir", tmp_path), 4,
              f"Error: --ctx {ctx} is too short: use at least 1k")


# -- at 80 columns ------------------------------------------------------------------------------------

def test_tasks_prints_every_hint_whole_below_the_tables(tmp_path):
    result = _cli("tasks", "--data-dir", tmp_path, env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "…" not in result.output
    lines = result.output.splitlines()
    hints = [line for line in lines if re.match(r"^\[\d+\] ", line)]
    assert len(hints) == 14  # qa_1, qa_2, LongBench-v2, and 11 InfiniteBench splits
    expected = (f"LongBench-v2 data missing: download data.json from https://huggingface.co/datasets/zai-org/"
                f"LongBench-v2 and put it at {tmp_path / 'longbench_v2' / 'data.json'}")
    assert any(line.endswith(expected) for line in hints)  # on one line, to copy
    assert all(len(line) <= 80 for line in lines if not re.match(r"^\[\d+\] ", line))
    assert "not here [3]" in result.output


@pytest.mark.parametrize("columns", [80, 50])
def test_a_piped_bench_never_cuts_a_number(tmp_path, columns):
    """Columns are left out (and the caption says which) rather than numbers cut; a terminal narrower than
    what is left wraps them instead."""
    result = _cli("bench", "--workload", "llama8b-random", "--ctx", "256", "--methods", "sdpa,s2o", "--dtype", "fp32",
                  "--reps", "1", "--warmup", "0", "--out", tmp_path, "-q", env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    table = [line for line in result.output.splitlines() if line.startswith(("┃", "│", "┏", "└"))]
    assert table and max(len(line) for line in table) <= columns
    assert f"left out at {columns} columns: eff." in " ".join(result.output.split())
    if columns == 80:
        for record in json.loads((tmp_path / "llama8b-random-256.json").read_text()):
            assert f"{record['density']:.3f}" in result.output and f"{record['rel_l2']:.2e}" in result.output
