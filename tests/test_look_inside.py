"""Each lesson's look_inside.py on the tiny model: the code path runs, prints its figures and writes a PNG; bad
input is one `error:` line. (tests/test_exercises.py checks the README's printouts on the mini model.)"""

import pytest
from helpers import fails_cleanly, lesson_module


def run(lesson, argv, tmp_path, capsys) -> str:
    figure = tmp_path / f"inside{lesson}.png"
    capsys.readouterr()
    fewer = ["--questions", "6"] if lesson in ("02", "04") else []  # the scripts that run held-out questions
    lesson_module(lesson, "look_inside").main([*argv, "--figure", str(figure), *fewer])
    assert figure.stat().st_size > 10_000  # a drawn figure, not an empty file
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("lesson", "variant", "says"),
    [("01", "bitfit", "largest: "), ("02", "prompt_random", "logit raised most"),
     ("04", "prefix", "attention on the 10-token prefix"), ("06", "ia3", "moved most: ")],
)  # fmt: skip
def test_look_inside_draws_one_run(lesson, variant, says, trained, tmp_path, capsys):
    out = run(lesson, ["--adapter", str(trained(variant).out_dir)], tmp_path, capsys)
    assert says in out


def test_bitfit_subset_moves_only_b_q_and_the_mlp_input_bias(train_once, tiny_model_dir, tmp_path, capsys):
    folder = train_once(tiny_model_dir, "bitfit", ("--biases", "query_mlp")).out_dir
    out = run("01", ["--adapter", str(folder)], tmp_path, capsys)
    mean = out.splitlines()[-2].split()  # "mean" then one figure per column
    columns = out.splitlines()[1].split()[1:]
    moved = {c for c, v in zip(columns, mean[1:]) if float(v) > 0}
    assert moved == {"b_q", "h_to_4h"}, out


def test_ia3_q_and_k_vectors_stay_equal(trained, tmp_path, capsys):
    out = run("06", ["--adapter", str(trained("ia3").out_dir)], tmp_path, capsys)
    assert float(out.splitlines()[-1].split()[-1]) < 1e-4  # max |l_q - l_k|: same gradient from l = 1


def test_p_tuning_against_direct_prompts(train_once, trained, tiny_model_dir, tmp_path, capsys):
    direct = train_once(tiny_model_dir, "prompt_random", ("--learning_rate", "1e-3")).out_dir
    out = run("03", ["--adapter", str(trained("ptuning_mlp").out_dir), "--prompt_tuning", str(direct)],
              tmp_path, capsys)  # fmt: skip
    assert "prompt tuning (direct)" in out
    other = ["--adapter", str(trained("ptuning_mlp").out_dir), "--prompt_tuning", str(trained("prompt_random").out_dir)]
    fails_cleanly(capsys, "03", "look_inside", other, "different learning rates")


def test_lora_ranks(train_once, trained, tiny_model_dir, tmp_path, capsys):
    r2 = train_once(tiny_model_dir, "lora_qkv", ("--lora_r", "2")).out_dir
    out = run("05", ["--adapter", str(r2), str(trained("lora_qkv").out_dir)], tmp_path, capsys)
    assert "phi(r=2 top i, r=8 top j) from A" in out
    fails_cleanly(capsys, "05", "look_inside", ["--adapter", str(r2)], "two or more LoRA runs")


def test_another_lessons_run_is_refused(trained, capsys):
    fails_cleanly(capsys, "01", "look_inside", ["--adapter", str(trained("lora_qkv").out_dir)], "LORA adapter")
