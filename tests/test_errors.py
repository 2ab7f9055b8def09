"""Bad input on the command line: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations


import pytest

from conftest import run_in_process, finetune, finetune_process


@pytest.mark.parametrize(
    "args,expected",
    [
        (["model=bret"], "model=bret: no such option; choose one of albert, bert, clip, distilbert, flan_t5, flan_t5_small, gemma3, gpt_neo, llama, minilm, "
                           "modernbert, qwen2, qwen2_instruct, qwen3, roberta, smollm2"),
        (["train.lrr=1"], "train.lrr: unknown key; TrainSpec allows epochs, lr,"),
        (["method=lora", "method.rank=4"], "method.rank: unknown key; LoraSpec allows name, kind, search, r, alpha"),
        (["train.lr=fast"], "train.lr: Value 'fast' of type 'str' could not be converted to Float"),
        (["train.batch_size=0"], "train.batch_size: must be > 0, got 0"),
        (["dataset=local"], "dataset.path: data set 'local' needs dataset.path=DIR"),
        (["dataset=local", "dataset.path=/no/such/dir"], "dataset.path: '/no/such/dir' does not exist"),
        (["train.lr=inf"], "train.lr: must be a finite number, got inf"),
        (["method=lora", "method.dropout=nan"], "method.dropout: must be in [0, 1), got nan"),
        (["hardware.num_threads=-2"], "hardware.num_threads: must be > 0 or null (torch's default), got -2"),
        (["dataset.delimiter=ab"], "dataset.delimiter: must be one character"),
        (["model.path=/no/such/model"], "model.path: '/no/such/model' does not exist"),
        (["train.seed=-1"], "train.seed: must be in [0, 2**32 - 1], got -1"),
        (["dataset.validation_fraction=0"], "dataset.validation_fraction: must be strictly between 0 and 1, got 0.0"),
        (["method=lora", "method.target_modules={a:1}"], "method.target_modules: must be a list, e.g. method.target_modules=[a,b]"),
        (["hydra.run.dir=/tmp/ünï"], "hydra.run.dir=/tmp/ünï: cannot be parsed as an override; quote a value"),
        (["hardware=gpu"], "hardware.device: 'gpu' requested but no CUDA device is visible"),
        (["hardware.precision=fp16", "hardware.device=cpu"], "hardware.precision: fp16 needs a GPU"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path):
    run_dir = [] if any(arg.startswith("hydra.run.dir") for arg in args) else [f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_in_process(*args, *run_dir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"finetune: error: {expected}"), lines[-1]
    assert "Traceback" not in result.stderr
    if not any(".path=" in arg for arg in args):  # refused before anything is written (data and model: as they load)
        assert not (tmp_path / "run").exists()


def test_an_output_directory_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = finetune(f"hydra.run.dir={blocker / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"finetune: error: hydra.run.dir: cannot write the run directory '{blocker / 'run'}' (Not a directory)"
    )


def test_a_method_the_family_cannot_take_is_refused_before_loading(tmp_path):
    result = finetune("model=albert", "method=prefix_tuning", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "method: prefix_tuning does not apply to model=albert" in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_hydra_full_error_shows_the_traceback(tmp_path):
    result = finetune_process("train.lrr=1", f"hydra.run.dir={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_a_failed_run_is_recorded_as_failed(tmp_path):
    result = finetune("dataset=local", "dataset.path=/no/such/dir", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    import json

    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed"
    assert "does not exist" in record["error"]


def test_a_config_error_leaves_no_run_folder_behind(tmp_path):
    result = finetune("train.lr=-1", cwd=tmp_path)  # the default run dir, under ./outputs
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["finetune: error: train.lr: must be > 0, got -1.0"]
    assert not (tmp_path / "outputs").exists()


def test_a_file_in_another_encoding_is_one_line_that_says_how_to_read_it(tiny_bert, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = b"".join(b'{"text": "caf\xe9 number %d", "label": %d}\n' % (index, index % 2) for index in range(20))
    (data / "train.jsonl").write_bytes(b'{"text": "good", "label": 1}\n' + rows)
    result = finetune("dataset=local", f"dataset.path={data}", f"hydra.run.dir={tmp_path / 'run'}")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [  # not Hydra's "Error executing job", nor datasets' log lines
        f"finetune: error: {data / 'train.jsonl'}: line 2 is not valid utf-8 (byte b'\\xe9'); set dataset.encoding "
        "(e.g. dataset.encoding=latin-1) or re-encode the file as UTF-8"]

    again = finetune("dataset=local", f"dataset.path={data}", "dataset.encoding=latin-1", "model=bert",
                     f"model.path={tiny_bert}", "hardware=cpu", "train.max_steps=1", f"hydra.run.dir={tmp_path / 'run2'}")
    assert again.returncode == 0, again.stderr[-2000:]  # read as Latin-1: the run completes


def test_hydra_flags_that_do_not_combine_are_one_line(tmp_path):
    result = finetune("-m", "method=full,lora", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "finetune: error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified "
        "(see finetune --help)"]


def test_smoke_runs_without_tiny_models_say_how_to_build_them(tmp_path):
    result = finetune("+smoke=tiny", cwd=tmp_path, env={"FINETUNE_TINY_MODELS": ""})
    assert result.returncode == 2
    assert "python -m finetune.tiny ~/.cache/finetune-tiny" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_says_what_finetune_does_and_lists_the_companion_commands(tmp_path):
    result = finetune("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("finetune: fine-tune a transformer model")
    assert "schema/method" not in result.stdout
    assert "  method: adalora, adamss, beft, boft, c3a, cartridge, deft, delora, dora, eva, fourierft, frod, full" in result.stdout
    for command in ("finetune-report", "finetune-predict", "finetune-eval", "finetune-export"):
        assert f"  {command} " in result.stdout


def test_a_checkpoint_of_another_family_is_named_as_such(tiny_model, tmp_path):
    gpt_neo = tiny_model("gpt_neo")
    result = run_in_process("model=minilm", f"model.path={gpt_neo}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"finetune: error: model.path: '{gpt_neo}' holds a gpt_neo checkpoint, not a minilm (bert); choose the "
        "model=FAMILY that matches it, or another model.path")
    weights = gpt_neo / "config.json"
    result = run_in_process("model=gpt_neo", f"model.path={weights}", f"hydra.run.dir={tmp_path / 'other'}")
    assert result.stderr.strip().endswith(f"model.path: '{weights}' is a file; give the model's directory")
