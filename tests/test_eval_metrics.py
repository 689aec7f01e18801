"""Evaluation metrics (evaluation/eval_metrics/): BLEU, pass@k, DuReader EM/F1, bootstrap,
n-grams."""

import math
import subprocess
import sys

import numpy as np
import pytest

from codereason_jax.evaluation.eval_metrics import (bleu, bootstrap, contamination, dureader,
                                                    pass_rate)

# ------------------------------------------------------------------------------------ BLEU


def test_smoothed_bleu4_by_hand():
    ref = "the cat sat on the mat".split()   # r = 6
    hyp = "the cat sat on mat".split()       # c = 5
    # unigrams the cat sat on mat: all in ref                     -> 5/5 -> (5+1)/(5+1) = 1
    # bigrams  the-cat cat-sat sat-on on-mat: on-mat missing      -> 3/4 -> 4/5
    # trigrams the-cat-sat cat-sat-on sat-on-mat                  -> 2/3 -> 3/4
    # 4-grams  the-cat-sat-on cat-sat-on-mat                      -> 1/2 -> 2/3
    geo_mean = (1 * (4 / 5) * (3 / 4) * (2 / 3)) ** (1 / 4)        # = 0.4 ** 0.25
    brevity = math.exp(1 - 6 / 5)                                   # c < r
    expected = 100 * geo_mean * brevity
    assert expected == pytest.approx(65.1113, abs=1e-4)
    assert bleu.smoothed_bleu4([ref], [hyp]) == pytest.approx(expected, rel=1e-12)
    stats = bleu.bleu_stats([[ref]], [hyp])
    assert stats.precisions == pytest.approx((1.0, 4 / 5, 3 / 4, 2 / 3))
    assert (stats.hypothesis_length, stats.reference_length) == (5, 6)


def test_smoothing_clipping_and_multiple_references():
    # Clipping: "a a a a" against "a b": unigram a counts min(4, 1) = 1 -> (1+1)/(4+1) = 2/5;
    # bigrams a-a 0/3 -> 1/4; trigrams 0/2 -> 1/3; 4-grams 0/1 -> 1/2; c = 4 > r = 2 -> BP 1.
    expected = 100 * ((2 / 5) * (1 / 4) * (1 / 3) * (1 / 2)) ** 0.25
    assert bleu.smoothed_bleu4([["a", "b"]], [["a", "a", "a", "a"]]) == pytest.approx(expected)
    # Two references: clip by the max count over references, r is the SHORTEST reference.
    stats = bleu.bleu_stats([[["a", "b"], ["a", "a", "c", "d", "e"]]], [["a", "a"]])
    assert stats.precisions[:2] == pytest.approx(((2 + 1) / (2 + 1), (1 + 1) / (1 + 1)))
    assert stats.reference_length == 2 and stats.brevity_penalty == 1.0
    # Without smoothing a missing order gives 0.
    assert bleu.bleu_stats([[["a", "b"]]], [["a", "b"]], smooth=False).bleu == 0.0


def test_perfect_match_is_100_and_empty_hypothesis_is_0():
    assert bleu.smoothed_bleu4([["x"]], [["x"]]) == pytest.approx(100.0)  # orders 2-4: 1/1
    tokens = "def f ( x ) : return x + 1".split()
    assert bleu.smoothed_bleu4([tokens, ["y"]], [tokens, ["y"]]) == pytest.approx(100.0)
    assert bleu.smoothed_bleu4([["a", "b"]], [[]]) == 0.0
    with pytest.raises(ValueError):
        bleu.smoothed_bleu4([], [])


def test_paper_bleu_concatenation_can_turn_a_wrong_split_into_a_perfect_score():
    refs, preds = ["a bc", "d"], ["a b", "cd"]
    # Paper: "a bc" + "d" = "a bcd"; "a b" + "cd" = "a bcd": one identical segment -> 100.
    assert bleu.paper_bleu(refs, preds, str.split) == 100.0
    # Per example: [a b] vs [a bc] and [cd] vs [d]: unigrams 1/3 (only "a"), bigrams 0/1,
    # no 3-/4-grams -> p = 2/4, 1/2, 1, 1; c = 3 = r -> BP 1; BLEU = 100 * (1/4) ** (1/4).
    proper = 100 * ((1 + 1) / (3 + 1) * (0 + 1) / (1 + 1)) ** 0.25
    assert bleu.corpus_bleu(refs, preds, str.split) == pytest.approx(proper)
    assert proper == pytest.approx(100 / math.sqrt(2))


def test_paper_bleu_concatenation_destroys_a_match():
    refs, preds = ["p q", "r s"], ["p q", "t s"]
    # Per example: unigrams 3/4, bigrams 1/2 (p-q), no 3-/4-grams; c = r = 4:
    proper = 100 * ((3 + 1) / (4 + 1) * (1 + 1) / (2 + 1)) ** 0.25
    assert bleu.corpus_bleu(refs, preds, str.split) == pytest.approx(proper)
    # Paper: [p qr s] vs [p qt s]: the first (perfect) example loses "q" to the boundary.
    # unigrams 2/3, bigrams 0/2, trigrams 0/1, no 4-grams -> p = 3/4, 1/3, 1/2, 1; BP 1.
    paper = round(100 * (3 / 4 * 1 / 3 * 1 / 2) ** 0.25, 2)
    assert bleu.paper_bleu(refs, preds, str.split) == paper == 59.46
    assert round(proper, 2) == 85.46


def test_paper_bleu_strips_predictions_rounds_and_skips_non_strings():
    refs = ["x y z", "never scored"]
    assert bleu.paper_bleu(refs, ["  x y z\n", None], str.split) == 100.0   # None: pair skipped
    assert bleu.corpus_bleu(refs, ["  x y z\n", None], str.split) < 100.0   # None: counts as ""
    score = bleu.paper_bleu(["the cat sat on the mat"], ["the cat sat on mat"], str.split)
    assert score == 65.11
    with pytest.raises(ValueError):
        bleu.paper_bleu(["a"], [None], str.split)


def test_paper_bleu_copies_the_file_round_trip_for_tokens_with_newlines():
    # A character tokenizer emits "\n": the reference file "a b \n c d" then has two lines
    # and the prediction file one, so zip() keeps only the pair (reference "a b", prediction).
    assert bleu.paper_bleu(["ab\ncd"], ["abxy"], list) != 100.0
    assert bleu.paper_bleu(["ab\ncd"], ["ab"], list) == 100.0


def test_sacrebleu_comparison():
    refs = ["the cat sat on the mat", "def f(x): return x"]
    assert bleu.sacrebleu_corpus(refs, refs) == pytest.approx(100.0)
    assert bleu.sacrebleu_corpus(refs, refs, tokenize=str.split) == pytest.approx(100.0)
    # On one long pair without zero counts sacreBLEU's 'exp' smoothing does nothing, so it
    # equals unsmoothed compute_bleu.
    ref = "a b c d e f g h i j".split()
    hyp = "a b c d e f g x i j".split()
    unsmoothed = 100 * bleu.bleu_stats([[ref]], [hyp], smooth=False).bleu
    assert bleu.sacrebleu_corpus([" ".join(ref)], [" ".join(hyp)], str.split) == pytest.approx(
        unsmoothed)


# ---------------------------------------------------------------------------------- pass@k


def test_pass_at_k_by_hand():
    assert pass_rate.pass_at_k(5, 2, 1) == pytest.approx(0.4)                 # c / n
    assert pass_rate.pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)       # C(7,5) / C(10,5)
    assert pass_rate.pass_at_k(10, 0, 5) == 0.0
    assert pass_rate.pass_at_k(10, 6, 5) == 1.0                               # n - c < k
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_rate.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert 0.0 < pass_rate.pass_at_k(1000, 1, 100) < 1.0                      # no overflow
    with pytest.raises(ValueError):
        pass_rate.pass_at_k(3, 1, 5)
    with pytest.raises(ValueError):
        pass_rate.pass_at_k(3, 4, 1)


def test_mean_pass_at_k():
    assert pass_rate.mean_pass_at_k([(5, 2), (10, 3), (4, 0)], 1) == pytest.approx(
        (0.4 + 0.3 + 0) / 3)
    with pytest.raises(ValueError):
        pass_rate.mean_pass_at_k([], 1)


# -------------------------------------------------------------------------------- DuReader


def test_dureader_tokenize_and_normalize():
    assert dureader.dureader_tokenize("apple公司 在") == ["apple", "公", "司", " ", "在"]
    assert dureader.dureader_tokenize("a=b") == ["a", "=", "b"]
    assert dureader.dureader_tokenize("new york") == ["new york"]             # runs keep spaces
    assert dureader.dureader_normalize("《Apple》,（公司）：") == "apple公司"
    assert dureader.dureader_normalize("a.b?c!-") == "a.b?c!-"                 # ASCII . ? ! - kept


def test_dureader_hand_cases():
    # [北 京 大 学] vs [北 京]: lcs 2, P = 2/4, R = 2/2 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    assert dureader.dureader_scores("北京大学", ["北京"]) == (0, pytest.approx(2 / 3))
    # Substring, not bag of tokens: [京 北] vs [北 京] share only runs of 1 -> P = R = 1/2.
    assert dureader.dureader_scores("京北", ["北京"]) == (0, pytest.approx(0.5))
    # Punctuation is dropped before EM and F1.
    assert dureader.dureader_scores("《红楼梦》", ["红楼梦"]) == (1, 1.0)
    # Mixed: "apple公司, 在 美国" -> [apple 公 司 " " 在 " " 美 国] (8 tokens) vs [apple 公 司]:
    # lcs 3, P = 3/8, R = 1 -> F1 = 2 * 3/8 / (11/8) = 6/11.
    assert dureader.dureader_scores("Apple公司, 在 美国", ["APPLE公司"]) == (0, pytest.approx(6 / 11))
    # English words are not split on spaces: [new york] vs [york] share nothing.
    assert dureader.dureader_scores("new york", ["york"]) == (0, 0.0)
    # Max over references; a bare string is one reference.
    assert dureader.dureader_scores("北京大学", ["上海", "北京大学"]) == (1, 1.0)
    assert dureader.dureader_scores("北京", "北京") == (1, 1.0)
    assert dureader.dureader_scores(None, ["北京"]) == (0, 0.0)


def test_dureader_truncation_and_corpus_mean():
    prediction = "  北京" + "的" * 30                     # stripped first, then cut
    # Whole: 32 tokens, lcs 2 -> P = 1/16, R = 1 -> F1 = (1/8) / (17/16) = 2/17.
    assert dureader.dureader_scores(prediction, ["北京"])[1] == pytest.approx(2 / 17)
    # First 20 characters: 20 tokens -> P = 1/10 -> F1 = 0.2 / 1.1 = 2/11.
    assert dureader.dureader_scores(prediction, ["北京"], truncate_to=20)[1] == pytest.approx(2 / 11)
    result = dureader.dureader_em_f1(["北京大学", "《红楼梦》", None], [["北京"], ["红楼梦"], ["x"]])
    assert result["em"] == pytest.approx(100 * 1 / 3)
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1 + 0) / 3)   # None stays in the mean
    truncated = dureader.dureader_em_f1([prediction], [["北京"]], truncate_to=20)
    assert truncated == {"em": 0.0, "f1": pytest.approx(100 * 2 / 11)}
    with pytest.raises(ValueError):
        dureader.dureader_em_f1(["a"], [])


# ------------------------------------------------------------------------------- bootstrap


def binomial_quantiles(n, p, confidence):
    """The (1-c)/2 and (1+c)/2 quantiles of Binomial(n, p) / n, from the exact CDF."""
    cdf = np.cumsum([math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)])
    tail = (1 - confidence) / 2
    return tuple(int(np.searchsorted(cdf, q)) / n for q in (tail, 1 - tail))


def test_bootstrap_ci():
    assert bootstrap.accuracy_with_ci([True] * 50) == (1.0, 1.0, 1.0)
    # Two values: resample means are 0, 1/2, 1 with probability 1/4, 1/2, 1/4.
    assert bootstrap.bootstrap_ci([0.0, 1.0], n_resamples=4000) == (0.5, 0.0, 1.0)
    small = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1] * 3
    mean, low, high = bootstrap.accuracy_with_ci([bool(v) for v in small])
    assert mean == pytest.approx(0.7) and low < mean < high
    big_mean, big_low, big_high = bootstrap.accuracy_with_ci([bool(v) for v in small * 30])
    assert big_mean == pytest.approx(0.7) and big_low < big_mean < big_high
    assert big_high - big_low < (high - low) / 3                     # ~ 1/sqrt(30)
    assert bootstrap.bootstrap_ci(small, seed=3) == bootstrap.bootstrap_ci(small, seed=3)
    spread = [math.sqrt(i) for i in range(23)]                        # resample means all differ
    assert bootstrap.bootstrap_ci(spread, seed=3) == bootstrap.bootstrap_ci(spread, seed=3)
    assert bootstrap.bootstrap_ci(spread, seed=3) != bootstrap.bootstrap_ci(spread, seed=4)
    # 21 of 30 correct: a resample's mean is Binomial(30, 0.7) / 30, so with 10,000 resamples
    # the percentile interval lands on the binomial quantiles (each CDF step is far wider than
    # the Monte-Carlo error), and a smaller confidence gives a strictly narrower interval.
    assert (low, high) == pytest.approx(binomial_quantiles(30, 0.7, 0.95), abs=1e-12)
    narrow = bootstrap.bootstrap_ci(small, confidence=0.5)
    assert narrow[1:] == pytest.approx(binomial_quantiles(30, 0.7, 0.5), abs=1e-12)
    assert low < narrow[1] < narrow[2] < high
    with pytest.raises(ValueError):
        bootstrap.bootstrap_ci([])


def test_bootstrap_blocks_do_not_change_the_answer(monkeypatch):
    values = [float(v % 7) for v in range(100)]
    expected = bootstrap.bootstrap_ci(values, n_resamples=500, seed=1)      # one block
    for block in (100 * 64, 100 * 63 + 1, 1):                       # 64, 63 and 1 rows a block
        monkeypatch.setattr(bootstrap, "_BOOTSTRAP_BLOCK_ELEMENTS", block)
        assert bootstrap.bootstrap_ci(values, n_resamples=500, seed=1) == expected


# --------------------------------------------------------------------------- contamination


def test_ngram_overlap_finds_constructed_overlaps():
    corpus = ["one two three four five six", "alpha beta gamma", "x y"]
    evals = [
        "zero one two three nine",        # 3-gram "one two three" is in the corpus
        "two three five",                  # no 3-gram in the corpus
        "beta gamma",                      # short (2 < 3): the whole 2-gram is in the corpus
        "y x",                             # short, not in order
        "",                                # no tokens
        "gamma x y",                       # would span two corpus texts: not counted
    ]
    result = contamination.ngram_overlap(evals, iter(corpus), n=3)
    assert result["contaminated"] == [True, False, True, False, False, False]
    assert result["short"] == [False, False, True, True, True, False]
    assert result["num_contaminated"] == 2 and result["num_examples"] == 6
    assert result["fraction"] == pytest.approx(2 / 6)
    assert result["overlap"][0] == pytest.approx(1 / 3)  # 1 of its 3 trigrams
    assert result["overlap"][2] == 1.0


def test_ngram_overlap_default_13_grams_and_tokenizer():
    text = " ".join(f"w{i}" for i in range(20))
    result = contamination.ngram_overlap([text, text.upper()], ["prefix " + text + " suffix"])
    assert result["contaminated"] == [True, False] and result["overlap"][0] == 1.0
    lowered = contamination.ngram_overlap([text.upper()], [text],
                                          tokenize=lambda s: s.lower().split())
    assert lowered["contaminated"] == [True]


def test_ngram_hashes_do_not_depend_on_the_process():
    code = ("from codereason_jax.evaluation.eval_metrics import contamination as C;"
            "print(int(C._window_hashes(C._token_hashes(['a', 'b', 'c']), 3)[0]))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={"PYTHONHASHSEED": seed}, check=True).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1
    in_process = contamination._window_hashes(contamination._token_hashes(["a", "b", "c"]), 3)[0]
    assert outputs == {f"{int(in_process)}\n"}
