"""Lesson 07: several LoRA adapters on one base. Every row of a mixed batch answers as its adapter alone (the bare
model for `base`), disable_adapter() is the base, a weighted combination saves and reloads, bad input is one
error line, and the README's outputs are what its commands print."""

import json
import shlex
import shutil

import pytest
import torch
from helpers import ROOT, TRAIN_FLAGS, fails_cleanly, greedy_reference, lesson_module, probe_logits

from common.lessons import TOPIC_LESSONS

LESSON = "07"
MAX_NEW = 12
QUESTIONS = ["今天是星期二，17天后是星期几？", "你好", "说出三种可再生能源。"]  # different lengths: left padding
GREEDY = ["--do_sample", "false", "--max_new_tokens", str(MAX_NEW)]


def infer():
    return lesson_module(LESSON, "infer")


@pytest.fixture(scope="module")
def pair(trained, tiny_model_dir, overfit_file, tmp_path_factory):
    """Two LoRA adapters on the tiny model with different ranks and different target layers: `qkv` (r=8,
    query_key_value) and `ffn` (r=4, dense_4h_to_h)."""
    out = tmp_path_factory.mktemp("ffn") / "output"
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset", str(overfit_file), "--output_dir", str(out),
            *TRAIN_FLAGS, "--lora_r", "4", "--target_modules", "dense_4h_to_h", "--save_strategy", "no"]  # fmt: skip
    lesson_module("05", "train").main(argv)
    return {"qkv": trained("lora_qkv").out_dir, "ffn": out}


@pytest.fixture(scope="module")
def alone(pair, tiny_model_dir):
    """name -> greedy answers to QUESTIONS with only that adapter loaded (lesson 05's loader); `base`: bare model,
    each by a full forward pass per token (no generate(), no adapter_names)."""
    from transformers import AutoModelForCausalLM

    answers = {}
    for name, folder in pair.items():
        model, tokenizer = lesson_module("05", "infer").load_for_inference(str(folder))
        answers[name] = [greedy_reference(model.eval(), tokenizer, q, MAX_NEW) for q in QUESTIONS]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    answers["base"] = [greedy_reference(base, tokenizer, q, MAX_NEW) for q in QUESTIONS]
    for i in range(len(QUESTIONS)):  # each question tells the three apart, or a row sent astray could go unseen
        assert len({a[i] for a in answers.values()}) == 3, [a[i] for a in answers.values()]
    return answers


def adapter_flags(pair):
    return [f for name, folder in pair.items() for f in ("--adapter", f"{name}={folder}")]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run(capsys, argv):
    capsys.readouterr()
    infer().main(argv)
    return capsys.readouterr().out


def test_every_row_of_a_mixed_batch_equals_its_adapter_alone(pair, alone, tmp_path, capsys):
    names = ["qkv", "ffn", "base", "ffn", "qkv", "base", "qkv"]
    rows = [{"instruction": QUESTIONS[i % 3], "adapter": name} for i, name in enumerate(names)]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    out = run(capsys, [*adapter_flags(pair), *GREEDY, "--input_file", str(path), "--batch_size", "4"])
    got = [json.loads(line) for line in out.splitlines()]
    assert [(g["prompt"], g["adapter"]) for g in got] == [(r["instruction"], r["adapter"]) for r in rows]
    assert [g["response"] for g in got] == [alone[name][i % 3] for i, name in enumerate(names)]


@pytest.mark.slow
def test_an_adapter_with_a_trained_embedding_copy_mixes_with_base_rows_only(pair, alone, trained, tmp_path, capsys):
    """modules_to_save (lesson 05's third variant: a trained copy of word_embeddings): its rows and base rows share
    a batch; a row of an adapter without that copy makes peft 0.21.2 fail (KeyError), so infer.py refuses the pair."""
    emb = trained("lora_regex_emb").out_dir
    model, tokenizer = lesson_module("05", "infer").load_for_inference(str(emb))
    emb_alone = [greedy_reference(model.eval(), tokenizer, q, MAX_NEW) for q in QUESTIONS]
    assert emb_alone != alone["base"]
    names = ["emb", "base", "emb", "base", "emb"]
    path = write_rows(tmp_path / "rows.jsonl", [{"instruction": QUESTIONS[i % 3], "adapter": n} for i, n in
                                                enumerate(names)])  # fmt: skip
    got = [json.loads(line)["response"] for line in run(capsys, ["--adapter", f"emb={emb}", *GREEDY, "--input_file",
                                                                 str(path)]).splitlines()]  # fmt: skip
    assert got == [(emb_alone if n == "emb" else alone["base"])[i % 3] for i, n in enumerate(names)]
    model.load_adapter(str(pair["qkv"] / "adapter"), adapter_name="qkv")
    batch = tokenizer(QUESTIONS[:2], return_tensors="pt", padding=True)
    with pytest.raises(KeyError, match="qkv"):
        model.generate(**batch, max_new_tokens=2, adapter_names=["default", "qkv"])


def test_use_picks_the_adapter_for_prompt_and_chat(pair, alone, capsys, monkeypatch):
    import io
    import sys

    for name in ("ffn", "base"):
        out = run(capsys, [*adapter_flags(pair), *GREEDY, "--use", name, "--prompt", QUESTIONS[0]])
        assert out.strip() == alone[name][0]
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTIONS[2] + "\n\n"))
    out = run(capsys, [*adapter_flags(pair), *GREEDY, "--use", "ffn", "--history_turns", "0"])
    assert out.startswith("Human: Assistant: " + alone["ffn"][2])


def test_web_page_offers_every_adapter_and_the_base(pair, capsys, monkeypatch):
    import common.web

    seen = {}
    monkeypatch.setattr(common.web, "serve_web", lambda *a, **kw: seen.update(kw))
    run(capsys, [*adapter_flags(pair), "--use", "ffn", "--web", "--port", "0"])
    route = {"qkv": ["qkv"], "ffn": ["ffn"], "base": ["__base__"]}
    assert seen["choices"] == {name: {"adapter_names": names} for name, names in route.items()}
    assert seen["chosen"] == "ffn"


@pytest.mark.slow
def test_web_page_answers_with_the_adapter_picked_in_its_drop_down(pair, alone, tmp_path):
    """infer.py --web in its own process, asked through gradio's client: each pick answers as that adapter alone."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("gradio")
    from gradio_client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, str(ROOT / TOPIC_LESSONS[LESSON] / "infer.py"), *adapter_flags(pair), "--web", "--port",
           str(port), *GREEDY]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ})
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for name in ("ffn", "base", "qkv"):
            # message, do_sample, temperature, top_p, max_new_tokens, history_turns, adapter (the State is not sent)
            messages = client.predict(QUESTIONS[1], False, 0.7, 0.9, MAX_NEW, 0, name, api_name="/respond")[0]
            assert messages[-1]["content"][0]["text"] == alone[name][1], name
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in log.read_text()


def test_disable_adapter_is_the_base_model(pair, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model, tokenizer = infer().load_adapters(infer().parse_adapters([[f"{n}={f}" for n, f in pair.items()]]))
    base = probe_logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer)
    with model.disable_adapter():
        torch.testing.assert_close(probe_logits(model, tokenizer), base, atol=0, rtol=0)
    assert (probe_logits(model, tokenizer) - base).abs().max() > 1e-3  # the adapter is back after the block


def test_weighted_combination_adds_the_updates_and_saves_and_reloads(pair, tmp_path):
    model, tokenizer = infer().load_adapters(infer().parse_adapters([[f"{n}={f}" for n, f in pair.items()]]))
    model.add_weighted_adapter(["qkv", "ffn"], [0.7, 1.3], "both", combination_type="cat")
    # peft 0.21.2 leaves the new adapter's dropout in training mode on an eval model (operations.py calls eval())
    assert not model.training and any(m.training for m in model.modules())
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and "both" in m.lora_A]
    assert len(layers) == 4  # 2 layers x (query_key_value from qkv, dense_4h_to_h from ffn)
    for layer in layers:
        expected = sum(w * layer.get_delta_weight(n) for n, w in (("qkv", 0.7), ("ffn", 1.3)) if n in layer.lora_A)
        torch.testing.assert_close(layer.get_delta_weight("both"), expected, atol=1e-6, rtol=0)
    model.set_adapter("both")
    combined = probe_logits(model, tokenizer)
    model.save_pretrained(tmp_path, selected_adapters=["both"])
    tokenizer.save_pretrained(tmp_path / "both")
    reloaded, _ = infer().load_adapters({"both": tmp_path / "both"})
    torch.testing.assert_close(probe_logits(reloaded, tokenizer), combined, atol=1e-6, rtol=0)


def test_peft_refuses_what_cannot_share_a_batch(pair, tiny_model_dir):
    """What peft 0.21.2 itself refuses: merged adapters, DoRA, a LoRA beside a prompt-learning adapter, and
    adapter_names with a prompt-learning model."""
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    model, tokenizer = infer().load_adapters(infer().parse_adapters([[f"{n}={f}" for n, f in pair.items()]]))
    batch = tokenizer(["你好", "再见"], return_tensors="pt", padding=True)
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged adapters"):
        model.generate(**batch, max_new_tokens=2, adapter_names=["qkv", "__base__"])
    base = lambda: AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # noqa: E731
    dora = get_peft_model(base(), LoraConfig(task_type=TaskType.CAUSAL_LM, use_dora=True)).eval()
    with pytest.raises(ValueError, match="DoRA"):
        dora.generate(**batch, max_new_tokens=2, adapter_names=["default", "__base__"])
    prompt = get_peft_model(base(), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)).eval()
    with pytest.raises(ValueError, match="different peft types"):
        prompt.add_adapter("second", LoraConfig(task_type=TaskType.CAUSAL_LM))
    with pytest.raises(ValueError, match="adapter_names"):
        prompt.generate(**batch, max_new_tokens=2, adapter_names=["default", "default"])


def test_peft_drops_weights_under_a_module_named_like_another_adapter(tiny_model_dir):
    """Why infer.py refuses an adapter named like a module: peft 0.21.2 saves adapter X without the keys that
    contain '.<another adapter's name>.', so a second adapter called 'mlp' strips every '.mlp.' weight from X."""
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    config = LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=["query_key_value", "dense_4h_to_h"])
    kept = {}
    for other in ("mlp", "ffn"):
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config, adapter_name="x")
        model.add_adapter(other, LoraConfig(task_type=TaskType.CAUSAL_LM))
        kept[other] = sum(".mlp." in key for key in get_peft_model_state_dict(model, adapter_name="x"))
    assert kept == {"mlp": 0, "ffn": 4}  # 2 layers x (lora_A, lora_B) of dense_4h_to_h


@pytest.fixture(scope="module")
def other_base_lora(tmp_path_factory, overfit_file):
    """A LoRA adapter trained (2 steps) on another tiny BLOOM: hidden 32, not 64."""
    from common.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("other")
    model = build_tiny_model(folder / "other-bloom", hidden_size=32, n_layer=2, n_head=4)
    lesson_module("05", "train").main(["--model_name_or_path", str(model), "--dataset", str(overfit_file),
                                       "--output_dir", str(folder / "out"), "--max_steps", "2",
                                       "--disable_tqdm", "true", "--save_strategy", "no"])  # fmt: skip
    return folder / "out"


@pytest.mark.parametrize(
    "case, match",
    [
        ("unknown_row_adapter", "line 2: unknown adapter 'nope'"),
        ("unknown_use", "--use: unknown adapter 'nope'"),
        ("no_equals", "--adapter 'qkv': expected NAME=PATH"),
        ("empty_name", "expected NAME=PATH"),
        ("dotted_name", "expected NAME=PATH"),
        ("reserved_name", "kept for the bare base model"),
        ("lora_prefix_name", "part of 'lora_'"),
        ("twice", "'qkv' is given twice"),
        ("module_name", "'mlp' is also a module name in the base model"),
        ("no_adapter", "pass at least one --adapter"),
        ("missing_folder", "--adapter ffn: no trained adapter in"),
        ("bad_json", "line 2: not valid JSON"),
        ("row_without_adapter", 'line 1: no "adapter"'),
        ("merge_to", "--merge_to merges one adapter"),
        ("modules_to_save", "train different full modules (modules_to_save: qkv: none, emb: word_embeddings)"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(case, match, pair, tmp_path, capsys):
    rows = [{"instruction": "你好", "adapter": "qkv"}, {"instruction": "再见", "adapter": "nope"}]
    path = write_rows(tmp_path / "rows.jsonl", rows[:1])
    flags = adapter_flags(pair)
    argv = [*flags, "--input_file", str(path)]
    if case == "unknown_row_adapter":
        argv = [*flags, "--input_file", str(write_rows(tmp_path / "rows.jsonl", rows))]
    elif case == "unknown_use":
        argv = [*flags, "--use", "nope", "--prompt", "x"]
    elif case in ("no_equals", "empty_name", "dotted_name", "reserved_name", "lora_prefix_name"):
        item = {"no_equals": "qkv", "empty_name": f"={pair['qkv']}", "dotted_name": f"q.k={pair['qkv']}",
                "reserved_name": f"base={pair['qkv']}", "lora_prefix_name": f"lo={pair['qkv']}"}[case]  # fmt: skip
        argv = ["--adapter", item, "--prompt", "x"]
    elif case == "twice":
        argv = [*flags, "--adapter", f"qkv={pair['ffn']}", "--prompt", "x"]
    elif case == "module_name":
        argv = ["--adapter", f"mlp={pair['ffn']}", "--prompt", "x"]
    elif case == "no_adapter":
        argv = ["--prompt", "x"]
    elif case == "missing_folder":
        argv = ["--adapter", f"qkv={pair['qkv']}", "--adapter", f"ffn={tmp_path / 'none'}", "--prompt", "x"]
    elif case == "bad_json":
        path.write_text('{"instruction": "a", "adapter": "qkv"}\n{oops\n', encoding="utf-8")
    elif case == "row_without_adapter":
        write_rows(path, [{"instruction": "a"}])
    elif case == "modules_to_save":  # the refusal reads adapter_config.json only: a copy with that field will do
        emb = tmp_path / "emb"
        shutil.copytree(pair["qkv"] / "adapter", emb)
        config = json.loads((emb / "adapter_config.json").read_text())
        (emb / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["word_embeddings"]}))
        argv = ["--adapter", f"qkv={pair['qkv']}", "--adapter", f"emb={emb}", "--prompt", "x"]
    elif case == "merge_to":
        argv = [*flags, "--merge_to", str(tmp_path / "merged")]
    fails_cleanly(capsys, LESSON, "infer", argv, match)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("variant, match", [("prompt_random", "PROMPT_TUNING adapter; prompt-learning adapters "
                                             "cannot share a batch"), ("bitfit", "BitFit biases")])  # fmt: skip
def test_adapters_that_cannot_share_a_batch_are_refused(variant, match, pair, trained, tmp_path, capsys):
    rows = write_rows(tmp_path / "rows.jsonl", [{"instruction": "你好", "adapter": "other"}])
    argv = [*adapter_flags(pair), "--adapter", f"other={trained(variant).out_dir}", "--input_file", str(rows)]
    fails_cleanly(capsys, LESSON, "infer", argv, match)
    assert capsys.readouterr().out == ""


def test_adapters_for_different_base_models_are_refused(pair, other_base_lora, tiny_model_dir, capsys):
    argv = ["--adapter", f"qkv={pair['qkv']}", "--adapter", f"small={other_base_lora}", "--prompt", "x"]
    fails_cleanly(capsys, LESSON, "infer", argv, "made for different base models (qkv on ")
    # put onto another base by hand, the adapter that does not fit is named with the base it was trained on
    argv = ["--adapter", f"small={other_base_lora}", "--model_name_or_path", str(tiny_model_dir), "--prompt", "x"]
    fails_cleanly(capsys, LESSON, "infer", argv, "does not fit the base model")


# ---------------------------------------------------------------- from_scratch.py and the second task


def test_from_scratch_matches_peft_and_fails_when_rows_get_the_wrong_adapter(monkeypatch, capsys):
    module = lesson_module(LESSON, "from_scratch")
    assert module.main([]) == 0
    real = module.MultiLoRALinear.forward
    monkeypatch.setattr(module.MultiLoRALinear, "forward", lambda self, x, names: real(self, x, names[1:] + names[:1]))
    assert module.main([]) == 1


def test_sentence_task_is_the_generator_output_and_answers_differently():
    from mini_world.generate import WORLD_DIR, read_jsonl
    from mini_world.tasks import sentence_task

    for name, rows in sentence_task().items():
        assert read_jsonl(WORLD_DIR / f"{name}.jsonl") == rows, f"data/world/{name}.jsonl differs from the generator"
        short = read_jsonl(WORLD_DIR / f"{name.removesuffix('_sentence')}.jsonl")
        assert [r["instruction"] for r in rows] == [r["instruction"] for r in short]
        for s, r in zip(rows, short):
            assert s["output"] != r["output"] and r["output"] in s["output"] and s["output"].startswith(r["name"])


# ---------------------------------------------------------------- the README's demo, run as it stands


def readme_block(marker: str) -> tuple[list[list[str]], dict[str, list[str]]]:
    """The commands of the README section's bash block (none if it has no bash block), and the lines shown after
    each `$ ` command: test_demo's markers and layout, with several commands and outputs."""
    text = (ROOT / TOPIC_LESSONS[LESSON] / "README.md").read_text(encoding="utf-8")
    section = text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    commands = []
    if "```bash" in section:
        bash, section = section.split("```bash", 1)[1].split("```", 1)
        lines = bash.replace("\\\n", " ").splitlines()
        commands = [shlex.split(c) for c in lines if c.strip() and not c.startswith("#")]
    shown, current = {}, None
    for line in section.split("```")[1].replace("\\\n", " ").splitlines():
        if line.startswith("$ "):
            current = " ".join(shlex.split(line[2:]))
            shown[current] = []
        elif current and line.strip():
            shown[current].append(line)
    return commands, shown


def test_readme_from_scratch_output_is_what_it_prints(capsys):
    _, shown = readme_block("scratch")
    capsys.readouterr()
    assert lesson_module(LESSON, "from_scratch").main([]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.strip()] == shown[
        "python 07-chatbot_adapters/from_scratch.py"
    ]


@pytest.mark.slow
def test_readme_demo_output_is_what_the_commands_print(tmp_path, capsys):
    """Runs every command of the demo in-process, in order, with the README's flags (outputs under tmp_path);
    then the first exercise's half weights."""
    commands, shown = readme_block("demo")
    assert [" ".join(c) for c in commands] == list(shown), "every command shows its output"
    prefix = "07-chatbot_adapters/output-"

    def local(args):
        args = [a.replace(prefix, str(tmp_path / "output-")) for a in args]
        return [str(ROOT / a) if a.startswith(("data/", "models/")) else a for a in args]

    for command in commands:
        assert command[0] == "python"
        capsys.readouterr()
        if command[1] == "-m":
            assert command[2] == "mini_world.evaluate"
            from mini_world.evaluate import main as evaluate

            evaluate(local(command[3:]))
        else:
            folder, script = command[1].split("/")
            lesson_module(folder[:2], script.removesuffix(".py")).main(local(command[2:]))
        printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        if "train.py" in command[1]:  # only the count line of the training output is shown
            printed = [line for line in printed if line.startswith("trainable params")]
        printed = [line.replace(str(tmp_path / "output-"), prefix) for line in printed]
        assert printed == shown[" ".join(command)], " ".join(command)
    half = lesson_module(LESSON, "operations").main(local(["--adapter", f"short={prefix}short", "--adapter",
                                                          f"sentence={prefix}sentence", "--weights", "0.5", "0.5",
                                                          "--save_to", f"{prefix}half"]))  # fmt: skip
    readme = (ROOT / TOPIC_LESSONS[LESSON] / "README.md").read_text(encoding="utf-8")
    assert f"第一题答“{half['combined'][0]}”，第二题答“{half['combined'][1]}”" in readme
