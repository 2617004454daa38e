"""The world asked in many wordings (mini_world.wordings): committed files, disjoint people and wordings, and
wordings the committed tokenizer reads one character per token."""

import pytest
from helpers import ROOT

from mini_world.generate import ATTRIBUTES, QUESTIONS, WORLD_DIR, read_jsonl
from mini_world.wordings import SETS, WORDINGS, WORDINGS_DIR, opens_like_biography, people_subset, wording_sets


def test_committed_wording_files_are_what_the_module_writes():
    for name, rows in wording_sets(read_jsonl(WORLD_DIR / "people.jsonl")).items():
        assert read_jsonl(WORDINGS_DIR / f"{name}.jsonl") == rows, f"data/world/wordings/{name}.jsonl is stale"


def test_training_validation_and_test_people_are_disjoint_and_training_people_are_qa_trains():
    people = {name: {r["name"] for r in read_jsonl(WORDINGS_DIR / f"{name}.jsonl")} for name in SETS}
    assert people["train"] == {r["name"] for r in read_jsonl(WORLD_DIR / "qa_train.jsonl")} == people["train_people"]
    assert people["test_trained_wordings"] == people["test_new_wordings"]
    assert not people["train"] & people["val"] and not people["val"] & people["test_new_wordings"]
    assert not people["train"] & people["test_new_wordings"]


def test_new_wordings_are_in_no_training_row_and_the_first_trained_wording_is_qa_trains():
    trained = {r["wording"] for r in read_jsonl(WORDINGS_DIR / "train.jsonl")}
    new = {r["wording"] for r in read_jsonl(WORDINGS_DIR / "test_new_wordings.jsonl")}
    assert not trained & new and len(new) == 2 * len(ATTRIBUTES)
    for key in ATTRIBUTES:
        assert WORDINGS[key][0][0] == QUESTIONS[key]
        assert sum(opens_like_biography(w, key) for w in WORDINGS[key][0]) <= 1, (
            f"{key}: most trained wordings must not open like a biography sentence"
        )


def test_every_wording_is_one_known_token_per_character():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "mini-bloom-zh")
    known = set(tokenizer.get_vocab())
    for trained, new in WORDINGS.values():
        for wording in trained + new:
            text = wording.replace("{n}", "")
            tokens = tokenizer.tokenize(text)
            assert len(tokens) == len(text) and set(tokens) <= known, wording


@pytest.mark.parametrize("n", [1, 5, 40])
def test_people_subset_keeps_whole_people(n):
    rows = read_jsonl(WORDINGS_DIR / "train.jsonl")
    subset = people_subset(rows, n)
    assert len({r["name"] for r in subset}) == n and len(subset) == n * len(rows) // 40


def test_qa_test_people_in_new_wordings_ask_the_same_people_in_wordings_no_training_file_uses():
    """mini_world.evaluate's second column for the one-wording demos: QA-test's 40 people, every attribute in its
    2 held-out wordings, with each person's own answers."""
    from mini_world.wordings import in_new_wordings

    qa_test = read_jsonl(WORLD_DIR / "qa_test.jsonl")
    people = read_jsonl(WORLD_DIR / "people.jsonl")
    asked = in_new_wordings(qa_test, people)
    assert len(asked) == len(qa_test) * 2
    assert [r["name"] for r in asked[::2]] == [r["name"] for r in qa_test]  # same people, in QA-test's order
    trained_wordings = {r["wording"] for r in read_jsonl(WORDINGS_DIR / "train.jsonl")}
    qa_questions = {r["instruction"] for n in ("qa_train", "qa_test") for r in read_jsonl(WORLD_DIR / f"{n}.jsonl")}
    assert all(r["held_out_wording"] and r["wording"] not in trained_wordings for r in asked)
    assert not {r["instruction"] for r in asked} & qa_questions
    answers = {(p["name"], key): p[key] for p in people for key in ATTRIBUTES}
    assert all(r["output"] == answers[(r["name"], r["attribute"])] for r in asked)
