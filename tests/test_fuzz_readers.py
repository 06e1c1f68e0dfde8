"""Every reader of a file a user supplies or the tool wrote, fuzzed (issue 23): random bytes, the valid
file cut at every offset, invalid UTF-8, valid JSON of the wrong shape ({}, [], null, NaN, strings for
numbers), a directory in its place, a link to itself, a file without read permission.

The property, for each reader: it returns, or raises the one error it promises, in one line that names
the file: ``DataUnavailable`` for suite data (the task is skipped, exit 3 when nothing else runs: see
``test_bad_inputs``), a ``CommandFailed`` of exit 4 (2 where two inputs disagree) for the harness's inputs,
nothing at all where the tool repairs what it reads (a run's JSON-lines files, the model cache). Readers
never write: the finished samples of a run they read stay byte for byte. Seeded loops, well within a
minute on two cores."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fuzzing import byte_mutations, check_reader, json_mutations, unreadable, wrong_shapes
from s2o_eval.bench.capture import CapturedLayer, read_capture, write_capture
from s2o_eval.bench.markdown import render_markdown
from s2o_eval.bench.records import read_records
from s2o_eval.bench.workloads import load_workload
from s2o_eval.cli import app
from s2o_eval.cli.tables import bench_tables
from s2o_eval.errors import CommandFailed, ExitCode, UserError
from s2o_eval.models import cache as model_cache
from s2o_eval.reporting import load_runs
from s2o_eval.reporting.build import compute
from s2o_eval.reporting.regress import baseline_from_run, check_comparable, evaluate, load_baseline
from s2o_eval.run.rundir import RunDir, UnreadableRunFile, sample_key
from s2o_tasks.common import DataUnavailable
from s2o_tasks.infinitebench.dataset import load_dataset as load_infinitebench
from s2o_tasks.longbench_v2.dataset import load_dataset as load_longbench, read_cot_responses
from s2o_tasks.ruler import data as ruler_data
from s2o_tasks.ruler.generate import build_docs

from test_longbench_v2 import record as longbench_record


def _rng(name: str) -> random.Random:
    return random.Random(f"fuzz-{name}")


def _fuzz(path: Path, mutations, read, promised, names=None, command=None, every: int = 100) -> int:
    """Write each mutation at ``path``, then each unreadable thing, and check ``read`` on it; and every
    ``every``-th case, ``command`` (the CLI that reads the file) with ``_check_command``."""
    names = names or (path,)
    cases = 0
    for case, data in mutations:
        path.write_bytes(data)
        check_reader(read, promised, case, names)
        if command and cases % every == 0:
            command(case)
        cases += 1
    path.unlink()
    for case in unreadable(path):
        check_reader(read, promised, case, names)
        if command:
            command(case)
        cases += 1
    return cases


def _check_command(args: list, codes: tuple[int, ...]):
    """The command of ``args`` ends with one of ``codes`` (0 where the damage left the file good) and one
    ``Error:`` line, never a traceback."""
    def command(case: str) -> None:
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code in (0, *codes), f"{case}: exit {result.exit_code}: {result.output}"
        assert "Traceback" not in result.output, f"{case}: {result.output}"
        if result.exit_code:
            assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1, case
    return command


# -- suite data: a damaged file skips its task ------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return str(tiny_model)


def test_longbench_v2_data_json(tmp_path, tokenizer):
    path = tmp_path / "longbench_v2" / "data.json"
    path.parent.mkdir(parents=True)
    valid = [longbench_record(i, words=20) for i in range(2)]
    read = lambda: load_longbench("longbench_v2", tokenizer=tokenizer, max_seq_length=1024, data_dir=str(tmp_path))  # noqa: E731
    assert _fuzz(path, json_mutations(valid, _rng("longbench")), read, DataUnavailable) > 500


INFINITEBENCH = {  # split -> (window, two records): the splits whose prompts or golds read more than text
    "passkey": (1024, {"context": "Grass is green. " * 8 + "The pass key is 71432.", "input": "What is the pass key?",
                       "answer": ["71432"], "options": []}),
    "code_debug": (1024, {"context": "def fn_a(x):\n    return x", "input": "", "answer": ["fn_c"],
                          "options": ["fn_a", "fn_b", "fn_c", "fn_d"]}),
    "math_find": (1024, {"context": "[3, 9, 4]", "input": "The largest number of the list is: ", "answer": [9],
                         "options": []}),
    "math_calc": (32768, {"context": "1 + 2 + 3", "input": "", "answer": [[1, 3, 6]], "options": []}),
}


@pytest.mark.parametrize("split", INFINITEBENCH)
def test_infinitebench_jsonl(tmp_path, tokenizer, split):
    window, record = INFINITEBENCH[split]
    path = tmp_path / "infinitebench" / f"{split}.jsonl"
    path.parent.mkdir(parents=True)
    read = lambda: load_infinitebench(split, tokenizer=tokenizer, max_seq_length=window, data_dir=str(tmp_path))  # noqa: E731
    mutations = json_mutations([dict(record, id=0), dict(record, id=1)], _rng(split), lines=True)
    assert _fuzz(path, mutations, read, DataUnavailable) > 300


def _ruler_reader(task: str, data_dir: Path, tokenizer: str):
    def read():
        ruler_data.load_qa.cache_clear()  # each case is a new file
        ruler_data.essay_words.cache_clear()
        return build_docs(task, tokenizer=tokenizer, max_seq_length=1024, num_samples=1, data_dir=str(data_dir))
    return read


SQUAD = {"version": "v2.0", "data": [{"title": "Items", "paragraphs": [
    {"context": "The code of item 0 is X000Z.", "qas": [
        {"question": "What is the code of item 0?", "id": "q0", "answers": [{"text": "X000Z", "answer_start": 22}],
         "is_impossible": False},
        {"question": "What is the code of item 9?", "id": "q9", "answers": [], "is_impossible": True}]},
    {"context": "The code of item 1 is X001Z.", "qas": [
        {"question": "What is the code of item 1?", "id": "q1", "answers": [{"text": "X001Z"}]}]}]}]}
HOTPOTQA = [{"_id": "h0", "question": "Which title comes first?", "answer": "Title 0", "type": "comparison",
             "context": [["Title 0", ["Sentence one.", " Sentence two."]], ["Title 1", ["Other sentence."]]]}]


@pytest.mark.parametrize("task, name, valid", [("qa_1", "squad_v2_dev.json", SQUAD),
                                               ("qa_2", "hotpotqa_dev.json", HOTPOTQA)])
def test_ruler_qa_files(tmp_path, tokenizer, task, name, valid):
    path = tmp_path / "ruler" / name
    path.parent.mkdir(parents=True)
    read = _ruler_reader(task, tmp_path, tokenizer)
    assert _fuzz(path, json_mutations(valid, _rng(name)), read, DataUnavailable) > 200


def test_ruler_essays(tmp_path, tokenizer):
    path = tmp_path / "ruler" / "paul_graham_essays" / "essay.txt"
    path.parent.mkdir(parents=True)
    valid = "Startups grow fast. Café owners don't. Most good ideas seem bad at first.\n".encode()
    read = _ruler_reader("niah_single_2", tmp_path, tokenizer)
    assert _fuzz(path, byte_mutations(valid, _rng("essays")), read, DataUnavailable, (path, path.parent)) > 100


def test_longbench_v2_first_stage_answers(tmp_path):
    """cot_responses: a samples file the harness may have torn; what does not parse is skipped."""
    path = tmp_path / "cot.jsonl"
    valid = [{"task": "s2o_longbench_v2_cot", "ctx": 900, "index": 2, "prediction": "Step one."},
             {"doc": {"index": 6}, "filtered_resps": ["From lm-eval's log."]}]
    read = lambda: read_cot_responses(path, 900)  # noqa: E731
    assert _fuzz(path, json_mutations(valid, _rng("cot"), lines=True), read, DataUnavailable) > 100


# -- the harness's inputs: exit 4 (or 2) in one line -----------------------------------------------

def _exit_codes(*codes: int):
    """Wraps a reader: the CommandFailed it raises must end the command with one of ``codes``."""
    def wrap(read):
        def checked():
            try:
                return read()
            except CommandFailed as err:
                assert err.exit_code in codes, f"exit {err.exit_code}, not one of {codes}: {err}"
                raise
        return checked
    return wrap


def _scored_run(root: Path) -> RunDir:
    run = RunDir(root / "run")
    run.write_config({"model": "m", "model_revision": "r1", "method": "s2o", "method_resolved": "s2o",
                      "method_args": {"tau": 0.01}, "tasks": ["s2o_ruler_vt"], "ctx": [1024], "limit": 3, "seed": 0})
    run.write_env({"gpu": "none", "versions": {"torch": torch.__version__}})
    for index, score in enumerate([100.0, 0.0, 100.0]):
        run.append_sample({"task": "s2o_ruler_vt", "ctx": 1024, "index": index, "score": score, "prefill_ms": 1.5,
                           "prompt_sha": f"sha{index}", "density": 0.5})
    run.append_session({"processes": 1, "evaluated": 3, "load_s": 1.0, "eval_s": 2.0})
    run.write_summary()
    return run


def test_regress_baseline(tmp_path):
    run = _scored_run(tmp_path)
    (loaded,) = load_runs([str(run.path)], tmp_path)
    valid = json.loads(json.dumps(baseline_from_run(loaded)))
    path = tmp_path / "baseline.json"
    checked = _exit_codes(ExitCode.USAGE, ExitCode.NOT_COMPARABLE)

    def read():
        baseline = load_baseline(path)
        check_comparable(baseline, loaded)
        return evaluate(baseline, loaded)

    samples = run.samples_path.read_bytes()
    regress = _check_command(["regress", run.path, "--against", path], (ExitCode.USAGE, ExitCode.NOT_COMPARABLE))
    # a baseline that reads but does not match the run says how they differ (exit 2), naming the baseline
    assert _fuzz(path, json_mutations(valid, _rng("baseline")), checked(read), CommandFailed, (path, "baseline"),
                 regress, every=50) > 1000
    assert run.samples_path.read_bytes() == samples


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, ["bench", "--workload", "llama8b-random", "--ctx", "256", "--methods", "sdpa",
                                      "--dtype", "fp32", "--reps", "1", "--warmup", "0", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "llama8b-random-256.json").read_text())


def test_bench_json(tmp_path, bench_json):
    path = tmp_path / "stored.json"

    def read():
        records = read_records(path)
        return render_markdown(records, {}), bench_tables(records)

    mutations = json_mutations(bench_json, _rng("bench"))
    render = _check_command(["bench", "--render", path, "--out", tmp_path / "report"], (ExitCode.USAGE,))
    assert _fuzz(path, mutations, _exit_codes(ExitCode.USAGE)(read), CommandFailed, None, render, every=400) > 500


def _write_small_capture(path: Path, tokens: int = 8) -> None:
    """Two layers of 2 q heads over 1 kv head, head dim 4: a few kilobytes, cut at every offset below."""
    gen = torch.Generator().manual_seed(0)
    layers = [CapturedLayer(layer=layer, scaling=0.25, q=torch.randn(1, 2, tokens, 4, generator=gen),
                            k=torch.randn(1, 1, tokens, 4, generator=gen), v=torch.randn(1, 1, tokens, 4, generator=gen))
              for layer in (1, 3)]
    write_capture(path, layers, {"model": {"name": "tiny", "max_window": 64}, "texts": [], "text_source": "test"})


def test_bench_capture(tmp_path):
    path = tmp_path / "capture.pt"
    _write_small_capture(path)
    valid = path.read_bytes()
    payload = torch.load(path, weights_only=True)
    read = _exit_codes(ExitCode.USAGE)(lambda: load_workload(str(path), None, "cpu", allow_beyond_window=True))
    cases = _fuzz(path, byte_mutations(valid, _rng("capture")), read, CommandFailed)
    for case, changed in wrong_shapes(payload):  # tensors are leaves: each replaced by a wrong value
        torch.save(changed, path)
        check_reader(read, CommandFailed, f"wrong shape: {case}", (path,))
        cases += 1
    for name, bad in (("a 3-D q", torch.zeros(1, 2, 8)), ("a q of other length", torch.zeros(1, 2, 5, 4)),
                      ("a q of 3 heads over 2", torch.zeros(1, 3, 8, 4))):
        torch.save({**payload, "layers": [dict(payload["layers"][0], q=bad)]}, path)
        check_reader(read, CommandFailed, name, (path,))
    assert cases > 3000
    torch.save({**payload, "layers": [dict(payload["layers"][0], q=torch.zeros(1, 2, 5, 4))]}, path)
    with pytest.raises(UserError, match=r"not an s2o-eval capture \(layer 1's q, k, v are \(1, 2, 5, 4\)"):
        read_capture(path)


def test_capture_text_files(tmp_path, monkeypatch):
    """capture --text: read before the model loads, so a bad file costs no work."""
    from s2o_eval.bench.capture import CaptureRequest, run_capture

    class ModelLoads(Exception):
        """The texts were read: the command went on to load the model."""

    def load_model(*args, **kwargs):
        raise ModelLoads

    monkeypatch.setattr("s2o_eval.models.load_model", load_model)
    path = tmp_path / "text.txt"
    request = CaptureRequest(model="unused", tokens=256, text_files=[path], out=tmp_path / "capture.pt")

    def read():
        try:
            run_capture(request)
        except ModelLoads:
            pass

    valid = "Startups grow fast. Café owners don't.\n".encode()
    assert _fuzz(path, byte_mutations(valid, _rng("capture-text")), _exit_codes(ExitCode.USAGE)(read),
                 CommandFailed) > 50


# -- what the tool repairs itself: never an error -------------------------------------------------

def _safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def test_model_cache_entry(tmp_path):
    """A damaged entry (its record, or its weights cut short) reads as absent: the next load rebuilds it."""
    entry = tmp_path / "entry"
    entry.mkdir()
    record, weights = entry / model_cache.RECORD_FILE, entry / "model.safetensors"
    valid_record = {"format": model_cache.CACHE_FORMAT, "source": "x.gguf", "gguf_sha256": "ab" * 32}
    header = {"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
    valid_weights = _safetensors(header, bytes(range(24)))
    weights.write_bytes(valid_weights)
    read = lambda: model_cache.read_record(entry)  # noqa: E731
    cases = _fuzz(record, json_mutations(valid_record, _rng("cache-record")), read, ())
    record.write_text(json.dumps(valid_record))
    assert read() == valid_record
    for case, data in byte_mutations(valid_weights, _rng("cache-weights")):
        weights.write_bytes(data)
        check_reader(read, (), case, (weights,))
        assert data == valid_weights or read() is None, case  # never trusted once damaged
        cases += 1
    for case, changed in wrong_shapes(header):
        weights.write_bytes(_safetensors(changed, bytes(range(24))))
        check_reader(read, (), f"header {case}", (weights,))
        cases += 1
    assert cases > 300


def _lines_kept(path: Path, before: bytes, after: list[dict], key) -> None:
    """Every whole line that survived the damage is still read (or a later line of the same sample)."""
    survivors = [json.loads(line) for line in path.read_bytes().splitlines() if line in before.splitlines()]
    assert {key(record) for record in survivors} <= {key(record) for record in after}


@pytest.mark.parametrize("name, read_one, key", [
    ("samples.jsonl", lambda run: run.samples(), sample_key),
    ("sessions.jsonl", lambda run: run.sessions(), json.dumps),
])
def test_run_jsonl_files(tmp_path, name, read_one, key):
    """Torn or garbled lines are skipped, every whole line kept; an unreadable file is exit 4."""
    run = _scored_run(tmp_path)
    path = run.path / name
    valid_lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    valid = path.read_bytes()
    cases = 0
    for case, data in json_mutations(valid_lines, _rng(name), lines=True):
        path.write_bytes(data)
        check_reader(lambda: _lines_kept(path, valid, read_one(run), key), (), case, (path,))
        cases += 1
    path.unlink()
    for case in unreadable(path):
        check_reader(lambda: read_one(run), UserError, case, (path,))
    assert cases > 100


@pytest.mark.parametrize("name", ["config.json", "env.json", "summary.json"])
def test_run_json_files_and_the_reports_that_read_them(tmp_path, name):
    """RunDir says UnreadableRunFile (the next run rewrites the file); reports read the run anyway or end in
    one line (exit 4); and nothing a report reads is ever written."""
    run = _scored_run(tmp_path)
    path = run.path / name
    valid = json.loads(path.read_text())
    samples = run.samples_path.read_bytes()
    file_reader = {"config.json": run.config, "env.json": run.env, "summary.json": run.summary}[name]

    def read():
        try:
            file_reader()
        except UnreadableRunFile:
            pass  # promised; and then what reports make of the run:
        (loaded,) = load_runs([str(run.path)], tmp_path, warn=lambda line: None)
        return compute([loaded], "fuzz")

    cases = _fuzz(path, json_mutations(valid, _rng(name)), _exit_codes(ExitCode.USAGE)(read),
                  CommandFailed, (path, run.path))
    assert cases > 100
    assert run.samples_path.read_bytes() == samples and run.recorded_config() is not None


def test_unreadable_files_are_one_line_for_every_reason(tmp_path):
    """The kinds of unreadable, as the messages say them (root reads a file without permission)."""
    from s2o_eval.reading import InputFile

    path = tmp_path / "input.json"
    said = []
    for case in unreadable(path):
        with pytest.raises(UserError) as err:
            InputFile(path, "fix it").read_json({"x": int})
        said.append(str(err.value))
    assert said[0] == f"{path} is a directory, not a file: fix it"
    assert said[1].startswith(f"{path} cannot be read (") and said[1].endswith("): fix it")
    assert said[2].startswith(f"{path} ")  # no permission, or (as root) a file of the wrong shape
