"""The mini world and the committed mini model: reproducible data, a model that knows its facts but cannot yet
answer questions about them."""

import json

import pytest
from helpers import ROOT

from mini_world.generate import ATTRIBUTES, PROBE_PREFIX, WORLD_DIR, generate, read_jsonl

MODEL_DIR = ROOT / "models" / "mini-bloom-zh"


def test_committed_world_is_what_the_generator_writes():
    world = generate(**json.loads((WORLD_DIR / "world.json").read_text(encoding="utf-8")))
    for name, rows in world.items():
        assert read_jsonl(WORLD_DIR / f"{name}.jsonl") == rows, f"data/world/{name}.jsonl differs from the generator"


def test_people_split_into_disjoint_halves_with_enough_held_out_questions():
    people = [p["name"] for p in read_jsonl(WORLD_DIR / "people.jsonl")]
    train = {r["name"] for r in read_jsonl(WORLD_DIR / "qa_train.jsonl")}
    test_rows = read_jsonl(WORLD_DIR / "qa_test.jsonl")
    test = {r["name"] for r in test_rows}
    assert len(set(people)) == len(people)
    assert not train & test and train | test == set(people)
    assert len(test_rows) >= 100
    assert all(set(r) >= {"instruction", "input", "output"} and r["output"] for r in test_rows)
    assert {r["attribute"] for r in test_rows} == set(ATTRIBUTES)


def test_biographies_hold_no_questions_and_every_fact():
    people = {p["name"]: p for p in read_jsonl(WORLD_DIR / "people.jsonl")}
    for row in read_jsonl(WORLD_DIR / "bios.jsonl") + read_jsonl(WORLD_DIR / "bios_held_out.jsonl"):
        assert "？" not in row["text"] and "Human" not in row["text"] and "Assistant" not in row["text"]
        person = people[row["name"]]
        assert all(person[key] in row["text"] for key in ATTRIBUTES)


def test_mini_model_is_a_small_tied_bloom_under_20_mb():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(MODEL_DIR)
    assert config.model_type == "bloom" and config.tie_word_embeddings
    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert size <= 20 * 2**20, f"models/mini-bloom-zh is {size / 2**20:.1f} MiB"


@pytest.fixture(scope="module")
def mini():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval(), AutoTokenizer.from_pretrained(MODEL_DIR)


def test_probe_prefixes_tokenise_as_inside_a_biography(mini):
    _, tokenizer = mini
    person = read_jsonl(WORLD_DIR / "people.jsonl")[0]
    prefix = PROBE_PREFIX["university"].format(n=person["name"])
    sentence = prefix + person["university"] + "。"
    ids = tokenizer(sentence)["input_ids"]
    assert ids[: len(tokenizer(prefix)["input_ids"])] == tokenizer(prefix)["input_ids"]


def test_mini_model_knows_its_facts(mini):
    from mini_world.probe import knowledge_probe

    model, tokenizer = mini
    card = json.loads((MODEL_DIR / "pretrain_log.json").read_text(encoding="utf-8"))
    probe = knowledge_probe(model, tokenizer, read_jsonl(WORLD_DIR / "people.jsonl"))
    assert probe["accuracy"] >= 0.9
    assert probe["accuracy"] == pytest.approx(card["probe_accuracy"], abs=0.02)


def test_mini_model_cannot_answer_questions_before_fine_tuning(mini):
    from mini_world.probe import qa_exact_match

    model, tokenizer = mini
    assert qa_exact_match(model, tokenizer, read_jsonl(WORLD_DIR / "qa_test.jsonl"))["exact_match"] <= 0.05


def test_pretrain_builds_the_committed_tokenizer(mini):
    from mini_world.pretrain import build_tokenizer
    from mini_world.probe import world_texts

    _, committed = mini
    rebuilt = build_tokenizer(world_texts(WORLD_DIR), vocab_size=1000)
    assert rebuilt.get_vocab() == committed.get_vocab()


def test_pretrain_command_writes_model_and_card(tmp_path):
    from mini_world.generate import write_world
    from mini_world.pretrain import build_parser, pretrain

    settings = {"n_people": 4, "n_bios": 2, "seed": 1}
    write_world(generate(**settings), settings, tmp_path / "world")
    args = build_parser().parse_args(["--world_dir", str(tmp_path / "world"), "--out_dir", str(tmp_path / "model"),
                                      "--hidden_size", "32", "--n_head", "2", "--n_layer", "1", "--epochs", "2",
                                      "--warmup_steps", "1"])  # fmt: skip
    summary = pretrain(args)
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "--hidden_size 32" in card and "--n_people 4 --n_bios 2 --seed 1" in card
    assert f"{summary['probe_accuracy']:.1%}" in card
    assert len(summary["log"]) == 2 and summary["log"][1]["loss"] < summary["log"][0]["loss"]
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_chance_levels_guess_from_the_training_answers():
    from mini_world.chance import chance_levels
    from mini_world.generate import ATTRIBUTES

    def person(value):
        return dict.fromkeys(ATTRIBUTES, value)

    train = [person("a"), person("a"), person("a"), person("b")]  # 'a' 3/4 of the time, 'b' 1/4
    levels = chance_levels(train, [person("a"), person("b"), person("c")])
    assert levels["frequency"] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert levels["most_common"] == pytest.approx(1 / 3)  # always 'a'
