"""measure.scoring against independent implementations: nltk's BLEU and Google's rouge-score."""

import pytest

from measure.scoring import bleu4, exact_match, rouge_l_f1, score_answers

PAIRS = [
    ("北京大学", "北京大学"),
    ("北京", "北京大学"),
    ("北京大学", "北京"),
    ("清华大学", "北京大学"),
    ("", "北京大学"),
    ("北京大学", ""),
    ("", ""),
    ("  上海 ", "上海"),
    ("1987年3月12日", "1987年3月12日"),
    ("1987年3月21日", "1987年3月12日"),
    ("1978年12月3日", "1987年3月12日"),
    ("星河科技", "云帆软件"),
    ("计算机科学", "计算机"),
    ("我在星河科技工作", "星河科技"),
    ("大学大学大学", "北京大学"),
    ("的的的的的", "的"),
    ("A", "A"),
    ("今天天气很好，我们去公园散步吧。", "今天天气不错，我们去公园走走。"),
    ("机器学习是人工智能的一个分支", "人工智能的一个分支是机器学习"),
    ("abc", "cba"),
    ("长沙", "沙长"),
    ("明镜律师事务所", "明镜律师事务所的员工"),
    ("音乐", "音乐"),
    ("重庆大学重庆大学", "重庆大学"),
]


def test_exact_match_strips_whitespace():
    assert exact_match(" 北京\n", "北京") == 1.0
    assert exact_match("北京大学", "北京") == 0.0
    assert exact_match("", "") == 1.0


@pytest.mark.parametrize(("pred", "ref"), PAIRS)
def test_rouge_l_equals_rouge_score(pred, ref):
    from rouge_score import rouge_scorer  # requirements-dev.txt

    class Characters:  # rouge-score's own tokenizer drops non-ASCII text; score characters instead
        def tokenize(self, text):
            return list(text.strip())

    expected = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Characters()).score(ref, pred)["rougeL"].fmeasure
    assert rouge_l_f1(pred, ref) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("pred", "ref"), PAIRS)
def test_bleu4_equals_nltk(pred, ref):
    from nltk.translate import bleu_score as bleu  # requirements-dev.txt

    pred_chars, ref_chars = list(pred.strip()), list(ref.strip())
    if not pred_chars or not ref_chars:
        expected = 0.0  # nltk 3.10.4 also returns 0 here; explicit, so the expected value does not hang on that
    else:
        expected = bleu.sentence_bleu([ref_chars], pred_chars, smoothing_function=bleu.SmoothingFunction().method3)
    assert bleu4(pred, ref) == pytest.approx(expected, abs=1e-12)


def test_identical_answers_score_one_and_short_bleu_is_penalised():
    assert rouge_l_f1("北京大学", "北京大学") == 1.0
    assert bleu4("1987年3月12日", "1987年3月12日") == pytest.approx(1.0)
    assert bleu4("北京", "北京") < 1.0  # no 3- or 4-grams in two characters


def test_score_answers_means_and_rejects_misaligned_lists():
    scores = score_answers(["北京", "上海"], ["北京", "广州"])
    assert scores["exact_match"] == 0.5
    assert scores["rouge_l"] == 0.5
    with pytest.raises(ValueError):
        score_answers(["北京"], ["北京", "上海"])
