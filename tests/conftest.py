import json
import os

import pytest
from helpers import ROOT, TRAIN_FLAGS, VARIANTS, lesson_module

from common.quiet import silence_library_noise

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on 2 cores: two workers with 2 torch threads each slow each other many times over; one thread
    # per worker, and per process each worker starts (lesson scripts, torchrun), keeps the cores busy without that
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_runtest_setup(item):
    """The filters every script installs when it imports `common`. pytest resets the warning filters around each
    test (and around the import of this file), so they are installed again before each test's fixtures."""
    silence_library_noise()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from common.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-bloom")


@pytest.fixture(scope="session")
def overfit_file(tmp_path_factory):
    """Four short rows to overfit on; the probe prompts come from them."""
    rows = json.loads((ROOT / "data" / "alpaca_sample_zh.json").read_text(encoding="utf-8"))
    picked = [r for r in rows if len(r["output"]) < 30][:4]
    path = tmp_path_factory.mktemp("data") / "overfit.json"
    path.write_text(json.dumps(picked, ensure_ascii=False), encoding="utf-8")
    return path


class Trained:
    def __init__(self, variant, trainer, out_dir, argv):
        self.variant, self.lesson = variant, VARIANTS[variant][0]
        self.trainer, self.out_dir, self.argv = trainer, out_dir, argv
        self.adapter = out_dir / "adapter"


@pytest.fixture(scope="session")
def train_once(overfit_file, tmp_path_factory):
    """(model folder, variant, extra flags) -> Trained: each trained once per test session, in-process (no import
    cost), on the four overfit rows."""
    cache = {}

    def get(model_dir, variant, extra=()):
        key = (str(model_dir), variant, tuple(extra))
        if key not in cache:
            lesson, flags = VARIANTS[variant]
            out_dir = tmp_path_factory.mktemp(f"{model_dir.name}-{variant}") / "output"
            argv = ["--model_name_or_path", str(model_dir), "--dataset", str(overfit_file),
                    "--output_dir", str(out_dir), *TRAIN_FLAGS, *flags, *extra]  # fmt: skip
            cache[key] = Trained(variant, lesson_module(lesson, "train").main(argv), out_dir, argv)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def trained(train_once, tiny_model_dir):
    """variant -> Trained on the tiny BLOOM."""
    return lambda variant: train_once(tiny_model_dir, variant)


@pytest.fixture(scope="session")
def real_architecture_dir(tmp_path_factory, tiny_model_dir):
    """bloom-1b4-zh's config.json (its facts, no weights) with a stand-in tokenizer.

    The real tokenizer splits the hard-prompt text "下面是一段人与机器人的对话。" into 7 tokens; the stand-in is
    the tiny tokenizer with those 7 pieces added as whole tokens, so the text-init row can be checked offline.
    """
    from transformers import AutoTokenizer, BloomConfig

    from common.models import REAL_CONFIG

    folder = tmp_path_factory.mktemp("real") / "bloom-1b4-zh-config"
    BloomConfig(**REAL_CONFIG).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["下面是", "一段", "人与", "机器人", "的", "对话", "。"])
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    """arch -> folder of a tiny random Qwen2 (GQA, q/k/v biases), Qwen3 or Llama with the tiny BLOOM's
    tokenizer, each built once per session from its config class."""
    from common.tiny_model import build_tiny_other_model

    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = build_tiny_other_model(tmp_path_factory.mktemp("tiny") / f"tiny-{arch}", arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def trained_other(train_once, other_model_dir):
    """(arch, variant, extra flags) -> Trained: a course variant trained on a non-BLOOM tiny model, once."""
    return lambda arch, variant, extra=(): train_once(other_model_dir(arch), variant, extra)


@pytest.fixture(scope="session")
def other_real_architecture_dirs(tmp_path_factory, real_architecture_dir):
    """name -> folder with the published config.json values of Qwen2.5-0.5B / Qwen3-0.6B (no weights) and the
    same stand-in tokenizer as real_architecture_dir (their real tokenizers are not available offline)."""
    from transformers import AutoConfig, AutoTokenizer

    from measure.counts import OTHER_REAL_CONFIGS

    tokenizer = AutoTokenizer.from_pretrained(real_architecture_dir)
    folders = {}
    for name, values in OTHER_REAL_CONFIGS.items():
        folder = tmp_path_factory.mktemp("real") / name.split("/")[-1]
        values = dict(values)
        AutoConfig.for_model(values.pop("model_type"), **values).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders
