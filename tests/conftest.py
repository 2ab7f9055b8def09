"""Shared fixtures: a tiny random BERT built from the real bert-base-uncased vocabulary, small data
sets written on the fly, and `compose_plan`, which composes the real conf/ the way `finetune` does."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from finetune.errors import UserError
from finetune.plan import CONF_DIR, Plan, register_configs
from finetune.plan import compose_plan as compose_plan_of
from finetune.tiny import save_tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
UPSTREAM_BREAK = "does not work with transformers"  # finetune.compat's refusal, naming the installed versions


@contextmanager
def skip_if_known_upstream_break() -> Iterator[None]:
    """Skip, with finetune.compat's reason, a combination the installed transformers/peft break.

    Never happens with constraints.txt; `scripts/test_newest.sh` lists such skips.
    """
    try:
        yield
    except UserError as refusal:
        if UPSTREAM_BREAK not in str(refusal):
            raise
        pytest.skip(str(refusal))

def pytest_configure(config) -> None:
    """Under pytest-xdist (`-n auto`) each worker takes its share of the cores, not all of them, and
    so do the processes it starts."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def feature_cache_dir(tmp_path_factory) -> Iterator[Path]:
    """Frozen features go to a folder of the test session, not the user's ~/.cache/finetune."""
    directory = tmp_path_factory.mktemp("finetune-cache")
    previous = os.environ.get("FINETUNE_CACHE")
    os.environ["FINETUNE_CACHE"] = str(directory)  # subprocesses inherit it
    yield directory
    if previous is None:
        del os.environ["FINETUNE_CACHE"]
    else:
        os.environ["FINETUNE_CACHE"] = previous


POSITIVE = "good great wonderful superb moving delightful charming brilliant fun touching".split()
NEGATIVE = "bad awful boring dull tedious clumsy stupid bland lifeless weak".split()
FILLER = "the movie film story plot acting a an is was this that it and".split()


def sentiment_rows(count: int, seed: int) -> list[dict]:
    """Short texts whose label is given by the polarity words they contain: easy to learn."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = index % 2
        words = rng.sample(FILLER, rng.randint(2, 8)) + rng.sample(POSITIVE if label else NEGATIVE, rng.randint(1, 3))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_splits(directory: Path, make_rows: Callable[[int, int], list[dict]], counts: tuple[int, int, int]) -> Path:
    """train/validation/test jsonl files of `make_rows(count, seed)`, seeds 0, 1, 2."""
    for seed, (split, count) in enumerate(zip(("train", "validation", "test"), counts)):
        write_jsonl(directory / f"{split}.jsonl", make_rows(count, seed))
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


TOKENIZER_FOLDERS = {  # family -> fixture tokenizer folders; later ones override earlier files
    "bert": ["bert"], "distilbert": ["bert", "distilbert"], "roberta": ["roberta"], "albert": ["albert"],
    "flan_t5": ["t5"], "gpt_neo": ["roberta", "gpt_neo"], "clip": ["clip"],
    # no tokenizer of today's families is bundled: their tiny models take GPT-Neo's (finetune.tiny)
    **{family: ["roberta", "gpt_neo"]
       for family in ("llama", "smollm2", "qwen2", "qwen2_instruct", "qwen3", "gemma3", "modernbert")},
}


FAMILIES = ("bert", "distilbert", "roberta", "albert", "flan_t5", "gpt_neo")  # the text families
MODERN_FAMILIES = ("llama", "smollm2", "qwen2", "qwen3", "gemma3", "modernbert")  # today's, on GPT-Neo's tokenizer
# GPT-Neo's tokenizer has no pad token: its end of text pads, as the GPT-Neo family does
TOKENIZER_OVERRIDES = {family: ("model.pad_token='<|endoftext|>'",) for family in (*MODERN_FAMILIES, "qwen2_instruct")}
# the tiny models are 32 wide: the sizes of these methods' YAMLs (fit for widths of 384 and up) do not divide it
TINY_SIZES = {"vblora": ("method.args.vector_length=16",), "c3a": ("method.args.block_size=16",),
              "road": ("method.args.group_size=16",), "waveft": ("method.args.n_frequency=256",),
              "fourierft": ("method.args.n_frequency=256",), "psoft": ("+method.args.r=8",)}


def _method_kinds() -> dict[str, str]:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return {path.stem: hydra_compose(config_name="config", overrides=[f"method={path.stem}"]).method.kind
                for path in sorted((CONF_DIR / "method").glob("*.yaml"))}


def _network_methods(kinds: dict[str, str]) -> tuple[str, ...]:
    """Every conf/method option with a class of its own that trains or evaluates a network (not the
    standalone SVM baselines): a new method YAML joins the family x method matrices without a test edit."""
    from finetune.methods import METHODS

    return tuple(name for name, kind in kinds.items() if not METHODS[kind].standalone and kind != "peft")


METHOD_KINDS = _method_kinds()
NETWORK_METHODS = _network_methods(METHOD_KINDS)
BY_CONFIG_METHODS = tuple(name for name, kind in METHOD_KINDS.items() if kind == "peft")  # peft types as YAMLs


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Callable[[str], Path]:
    """tiny_model(family) -> a directory with a random-weight model and the family's real tokenizer files
    (gpt_neo takes roberta's byte-identical merges.txt)."""
    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            directory = save_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
            for folder in TOKENIZER_FOLDERS[family]:
                for source in (FIXTURES / "tokenizers" / folder).iterdir():
                    if source.suffix == ".gz":
                        with gzip.open(source) as packed:
                            (directory / source.stem).write_bytes(packed.read())
                    else:
                        shutil.copy(source, directory / source.name)
            if family == "modernbert":  # transformers reads ModernBERT's tokenizer from tokenizer.json only
                from transformers import GPT2TokenizerFast

                GPT2TokenizerFast.from_pretrained(directory).save_pretrained(directory)
            built[family] = directory
        return built[family]

    return build


@pytest.fixture(scope="session")
def tiny_bert(tiny_model) -> Path:
    """A 2-layer, 32-wide random BERT (about 1M parameters) with the real uncased vocabulary."""
    return tiny_model("bert")


@pytest.fixture(scope="session")
def tiny_bert_without_dropout(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT with every dropout off, so that runs computed in other ways (two processes, or on
    cached frozen features) compute the same function."""
    directory = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    shutil.copytree(tiny_bert, directory, dirs_exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl with 160/48/48 separable rows."""
    return write_splits(tmp_path_factory.mktemp("sentiment"), sentiment_rows, (160, 48, 48))


def load_data(dataset, seed: int):
    """The splits of a DatasetSpec as a run of its task loads them."""
    from finetune.data import load_splits
    from finetune.tasks import task_kind

    return load_splits(dataset, task_kind(dataset.task), seed)


def compose(*overrides: str, output_dir: Path) -> Plan:
    """conf/ composed with overrides, as `finetune OVERRIDES` would, into a Plan writing to
    output_dir: the one way the tests build a run, from fixtures of any scope."""
    return compose_plan_of(list(overrides), output_dir)


@pytest.fixture
def compose_plan(tmp_path) -> Callable[..., Plan]:
    """compose(...) writing to tmp_path/run unless told otherwise."""

    def compose_with(*overrides: str, output_dir: Path | None = None) -> Plan:
        return compose(*overrides, output_dir=output_dir or tmp_path / "run")

    return compose_with


def tiny_overrides(tiny_bert: Path, sentiment_dir: Path) -> tuple[str, ...]:
    """The tiny BERT on the sentiment data, on the CPU, in a few seconds."""
    return ("model=bert", f"model.path={tiny_bert}", "model.max_length=32", "dataset=local",
            f"dataset.path={sentiment_dir}", "hardware=cpu", "train.batch_size=16", "train.lr=2e-3", "train.epochs=2")


@pytest.fixture
def tiny_plan(compose_plan, tiny_bert, sentiment_dir) -> Callable[..., Plan]:
    """A Plan of the tiny BERT on the sentiment data; extra overrides come last and win."""

    def make(*overrides: str, output_dir: Path | None = None) -> Plan:
        return compose_plan(*tiny_overrides(tiny_bert, sentiment_dir), *overrides, output_dir=output_dir)

    return make


EMOTION_WORDS = {"joy": "happy glad delighted", "anger": "furious angry mad", "fear": "scared afraid terrified"}


def emotion_rows(count: int, seed: int) -> list[dict]:
    """Texts carrying any subset of three emotions, each signalled by its own words; `labels` is 0/1 per emotion."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        flags = [rng.random() < 0.4 for _ in EMOTION_WORDS]
        words = rng.sample(FILLER, rng.randint(1, 4))
        words += [word for name, on in zip(EMOTION_WORDS, flags) if on for word in rng.sample(EMOTION_WORDS[name].split(), 2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": [int(flag) for flag in flags]})
    return rows


@pytest.fixture(scope="session")
def emotion_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl (160/48/48) of multilabel rows with a `labels` list column."""
    return write_splits(tmp_path_factory.mktemp("emotions"), emotion_rows, (160, 48, 48))


def article_rows(count: int, seed: int) -> list[dict]:
    """CNN/DailyMail-shaped rows: an `article` of 20-60 words whose first sentence is its `highlights`."""
    rng = random.Random(seed)
    vocabulary = POSITIVE + NEGATIVE + FILLER
    rows = []
    for _ in range(count):
        lead = " ".join(rng.choices(vocabulary, k=5)) + "."
        body = " ".join(rng.choices(vocabulary, k=rng.randint(15, 55))) + "."
        rows.append({"article": f"{lead} {body}", "highlights": lead})
    return rows


@pytest.fixture(scope="session")
def article_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl (48/8/8) with article and highlights columns."""
    return write_splits(tmp_path_factory.mktemp("articles"), article_rows, (48, 8, 8))


@pytest.fixture(scope="session")
def longer_data(tmp_path_factory) -> Path:
    """Enough rows that a tiny model trains for several seconds: time to kill it mid-epoch."""
    directory = tmp_path_factory.mktemp("longer")
    write_jsonl(directory / "train.jsonl", sentiment_rows(2400, 0))
    write_jsonl(directory / "validation.jsonl", sentiment_rows(48, 1))
    write_jsonl(directory / "test.jsonl", sentiment_rows(48, 2))
    return directory


class SimulatedCrash(Exception):
    pass


@contextmanager
def crash_after_checkpoint(monkeypatch, step: int) -> Iterator[None]:
    """Inside the block, a run raises SimulatedCrash right after writing its mid-epoch checkpoint of
    optimizer step `step`, as a process that died there would leave it."""
    from finetune.checkpoint import Checkpoints

    real_save = Checkpoints.save

    def save_then_crash(self, model, optimizer, scheduler, state, method_state=None):
        path = real_save(self, model, optimizer, scheduler, state, method_state)
        if state.step == step and state.batches_done:
            raise SimulatedCrash(f"simulated crash after step {step}")
        return path

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "save", save_then_crash)
        yield


def start_and_wait_for_checkpoint(command: list[str], run_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((run_dir / "checkpoints").glob("step-*")):
        assert process.poll() is None, f"the run ended before its first checkpoint: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    return process


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_in_process(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """`finetune ARGS` in this process (no interpreter start, no imports: a subprocess costs seconds),
    with its exit code and what it printed."""
    import finetune.cli

    stdout, stderr = io.StringIO(), io.StringIO()
    previous_pipe = signal.getsignal(signal.SIGPIPE)
    code = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["finetune", *args])
        # Hydra's logging setup closes every handler, and absl's (tensorboard imports it) then closes its
        # stream, which in a test is pytest's capture of stderr
        from absl.logging import PythonHandler

        patch.setattr(PythonHandler, "close", lambda self: self.flush())
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        with redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                finetune.cli.main()
            except SystemExit as exit_info:
                code = exit_info.code if isinstance(exit_info.code, int) else 1
    signal.signal(signal.SIGPIPE, previous_pipe)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def finetune(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """`finetune ARGS` run in this process from `cwd`, as a user would type it."""
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return run_in_process(*args, env={"HF_HUB_OFFLINE": "1", **(env or {})})
    finally:
        os.chdir(previous)


def finetune_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                     timeout: int = 300) -> subprocess.CompletedProcess:
    """`finetune ARGS` in a process of its own: for what only a process shows (signals, exit codes
    set by the interpreter, a traceback, environment read at start-up)."""
    return subprocess.run([sys.executable, "-m", "finetune", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def tiny_args(tiny_bert: Path, sentiment_dir: Path) -> list[str]:
    return ["model=bert", f"model.path={tiny_bert}", "dataset=local", f"dataset.path={sentiment_dir}",
            "hardware=cpu", "train.batch_size=16", "train.lr=2e-3"]


def split_metrics(plan, split: str = "test") -> dict[str, float]:
    """Reload the run's saved model and evaluate it on one split of the run's data."""
    from accelerate import Accelerator

    from finetune.batching import make_loader, sorted_batches
    from finetune.data import load_splits
    from finetune.evaluation import evaluate
    from finetune.tasks.encoding import tokenize
    from finetune.trained import load_run

    trained = load_run(Path(plan.run.output_dir))
    model, tokenizer = trained.model, trained.tokenizer
    data = load_splits(plan.run.dataset, plan.kind, plan.run.train.seed)
    task = plan.kind.build(plan.run, tokenizer, data.label_names)
    encoded = tokenize({split: data.splits[split]}, task, plan.run.model.max_length).splits[split]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(make_loader(encoded, task.collate_eval, sorted_batches(encoded["length"], 64)))
    return evaluate(accelerator.prepare(model), loader, task, accelerator).metrics


@pytest.fixture
def family_plan(compose_plan, tiny_model, sentiment_dir, tmp_path):
    def make(family: str, method: str, *overrides: str, output_dir: Path | None = None):
        return compose_plan(
            f"model={family}", f"model.path={tiny_model(family)}", "model.max_length=32", f"method={method}",
            "dataset=local", f"dataset.path={sentiment_dir}", "dataset.label_names=[negative,positive]",
            "dataset.max_train_samples=32", "dataset.max_eval_samples=16",
            "hardware=cpu", "train.batch_size=16", "train.lr=1e-3", *TOKENIZER_OVERRIDES.get(family, ()),
            *TINY_SIZES.get(method, ()), *overrides,
            output_dir=output_dir or tmp_path / f"run{len(list(tmp_path.iterdir()))}",
        )

    return make
