"""Multiple-choice scoring over several questions, worked out by hand with a table scorer.

The evaluation tasks emit one row per (question, candidate), as SeqIO gives them: bytes fields,
``*_pretokenized`` texts beside token ids, candidates of several questions interleaved. Every
expected number below is computed by hand from the table, so a wrong grouping, a wrong slice of
the batched sums, a wrong label or a wrong normaliser changes a value the test names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax.evaluation import scoring
from test_evaluation import CONFIG, TableScorer
from test_model import init, trained_scale


class ByteVocabulary:
    """One token per UTF-8 byte: "é" is two tokens but one character, so the per-token and
    per-character normalisers differ."""
    pad_id = 0

    def encode(self, text):
        return list(text.encode("utf-8"))


# NLL of predicting each byte, whatever the context; unlisted bytes cost 1.0. "é" is C3 A9.
TABLE = {ord("a"): 0.5, ord("b"): 2.0, ord("c"): 3.0, 0xC3: 4.0, 0xA9: 1.0, 0: 0.25}


def _row(qid, candidate, prompt, span, label, labels, pretokenized=True):
    """One candidate row as the eval tasks emit it (bytes, as read back from TensorFlow)."""
    row = {"example_id": qid.encode(), "candidate": candidate, "label": label,
           "labels": labels.encode()}
    if pretokenized:
        # The token-id fields hold something else entirely (read as text, these inputs would
        # overflow the context): the scorer must read the texts.
        row.update(inputs=np.arange(100), targets=np.array([9]),
                   inputs_pretokenized=prompt.encode(), targets_pretokenized=span.encode())
    else:
        row.update(inputs=prompt.encode(), targets=span.encode())
    return row


def _two_questions(pretokenized=True):
    """Question "q1" has three candidates, "q2" two; rows arrive interleaved and unsorted."""
    q1 = [("P:", "ab"), ("P:", "c"), ("P:", "aa")]
    q2 = [("Q:", "é"), ("Q:", "bbb")]
    rows = [
        _row("q2", 1, *q2[1], label=1, labels="", pretokenized=pretokenized),
        _row("q1", 2, *q1[2], label=2, labels="2,0", pretokenized=pretokenized),
        _row("q1", 0, *q1[0], label=2, labels="2,0", pretokenized=pretokenized),
        _row("q2", 0, *q2[0], label=1, labels="", pretokenized=pretokenized),
        _row("q1", 1, *q1[1], label=2, labels="2,0", pretokenized=pretokenized),
    ]
    return rows


def _score(mode, rows=None, max_length=64):
    scorer = TableScorer(TABLE)
    scorer.max_length = max_length
    rows = _two_questions() if rows is None else rows
    return scoring.score_multiple_choice(rows, ByteVocabulary(), scorer, mode)


# Per candidate (in candidate order), the span's token NLLs:
#   q1: "ab" -> 0.5, 2.0   "c" -> 3.0   "aa" -> 0.5, 0.5
#   q2: "é" -> 4.0, 1.0    "bbb" -> 2.0, 2.0, 2.0
EXPECTED = {
    # Mean NLL over the span's tokens given the prompt.
    "corrected": ([1.25, 3.0, 0.5], [2.5, 2.0]),
    # Total NLL of the span (higher log-likelihood wins, so lowest total NLL).
    "loglik": ([2.5, 3.0, 1.0], [5.0, 6.0]),
    # Total NLL per character of the span: "é" is one character.
    "loglik_norm": ([1.25, 3.0, 0.5], [5.0, 2.0]),
    # The released quirk: the span's first token is skipped and padding (0.25) is scored.
    #   "ab" -> mean(2.0, 0.25)   "c" -> mean(0.25)   "aa" -> mean(0.5, 0.25)
    #   "é" -> mean(1.0, 0.25)    "bbb" -> mean(2.0, 2.0, 0.25)
    "paper": ([1.125, 0.25, 0.375], [0.625, 4.25 / 3]),
}
PREDICTIONS = {"corrected": (2, 1), "loglik": (2, 0), "loglik_norm": (2, 1), "paper": (1, 0)}


@pytest.mark.parametrize("mode", scoring.MODES)
def test_each_mode_scores_every_candidate_of_every_question_by_hand(mode):
    results = _score(mode)
    assert [r.example_id for r in results] == ["q2", "q1"]  # order of first appearance
    by_id = {r.example_id: r for r in results}
    q1_scores, q2_scores = EXPECTED[mode]
    assert by_id["q1"].scores == pytest.approx(q1_scores, rel=1e-6)
    assert by_id["q2"].scores == pytest.approx(q2_scores, rel=1e-6)
    assert all(type(s) is float for r in results for s in r.scores)
    assert (by_id["q1"].prediction, by_id["q2"].prediction) == PREDICTIONS[mode]
    assert all(type(r.prediction) is int for r in results)
    assert not any(r.truncated for r in results)


def test_every_question_reads_its_own_slice_of_the_batched_sums():
    """Three questions of 2, 3 and 1 candidates: the third starts at row 5, which only a
    running offset finds."""
    spans = {"q1": ["a", "b"], "q2": ["c", "aa", "bb"], "q3": ["bbb"]}
    rows = [{"example_id": qid.encode(), "candidate": i, "inputs": b"P:",
             "targets": span.encode(), "label": 0, "labels": b"0"}
            for qid, group in spans.items() for i, span in enumerate(group)]
    results = _score("loglik", rows)
    assert [r.example_id for r in results] == ["q1", "q2", "q3"]
    for result, want in zip(results, ([0.5, 2.0], [3.0, 1.0, 4.0], [6.0])):
        assert result.scores == pytest.approx(want)


def test_gold_labels_come_from_the_labels_field_or_fall_back_to_the_label():
    by_id = {r.example_id: r for r in _score("corrected")}
    # q1: labels "2,0" (two gold answers); label 2.
    assert by_id["q1"].label == 2 and by_id["q1"].labels == (2, 0)
    assert by_id["q1"].correct  # predicted 2
    # q2: an empty labels field means the single label, 1.
    assert by_id["q2"].label == 1 and by_id["q2"].labels == (1,)
    assert by_id["q2"].correct  # predicted 1
    paper = {r.example_id: r for r in _score("paper")}
    assert not paper["q1"].correct and not paper["q2"].correct  # predicted 1 and 0
    assert all(type(x) is int for r in paper.values() for x in (r.label, *r.labels))


def test_plain_text_fields_are_read_when_there_is_no_pretokenized_text():
    for mode in scoring.MODES:
        plain = _score(mode, _two_questions(pretokenized=False))
        assert [r.scores for r in plain] == [r.scores for r in _score(mode)]


def test_bytes_and_str_ids_of_one_question_are_one_question():
    rows = _two_questions()
    for row in rows:
        if row["candidate"] == 1:
            row["example_id"] = row["example_id"].decode()  # str, as a Python reader gives
    results = _score("loglik", rows)
    assert sorted(len(r.scores) for r in results) == [2, 3]


def test_string_candidate_numbers_sort_as_numbers():
    """Ten or more options: candidate "10" comes after "9", not after "1"."""
    rows = [{"example_id": b"q", "candidate": str(i).encode(), "inputs": b"P:",
             "targets": ("c" if i == 10 else "a").encode(), "label": 10, "labels": b""}
            for i in (10, 2, 9, 0, 1, 3, 4, 5, 6, 7, 8)]
    result = _score("loglik", rows)[0]
    assert result.scores == pytest.approx([0.5] * 10 + [3.0])
    assert result.prediction == 0 and result.labels == (10,)


def test_an_empty_span_divides_by_one_character():
    rows = [{"example_id": b"q", "candidate": i, "inputs": b"P:", "targets": span.encode(),
             "label": 0, "labels": b"0"} for i, span in enumerate(["", "bb"])]
    result = _score("loglik_norm", rows)[0]
    assert result.scores == pytest.approx([0.0, 2.0]) and result.prediction == 0
    corrected = _score("corrected", rows)[0]  # no span token: mean over max(1, 0) terms
    assert corrected.scores == pytest.approx([0.0, 2.0])


def test_truncation_is_reported_per_question():
    """Only the question whose text overflows the context is marked truncated."""
    long_prompt = "P" * 20
    rows = [{"example_id": qid.encode(), "candidate": i, "inputs": prompt.encode(),
             "targets": b"ab", "label": 0, "labels": b"0"}
            for qid, prompt in (("long", long_prompt), ("short", "P:")) for i in range(2)]
    for mode in scoring.MODES:
        flags = {r.example_id: r.truncated for r in _score(mode, rows, max_length=16)}
        assert flags == {"long": True, "short": False}, mode
    # The span survives a cut prompt in the exact modes: its NLL is unchanged.
    corrected = {r.example_id: r.scores for r in _score("corrected", rows, max_length=16)}
    assert corrected["long"] == pytest.approx([1.25, 1.25])


def test_span_row_cut_keeps_at_least_one_prompt_token_and_the_span_head():
    row = scoring.span_row([1, 2, 3], [4, 5, 6, 7, 8, 9], max_length=4)
    # One prompt token is kept so that the span's first token has a context to be scored in.
    np.testing.assert_array_equal(row.tokens, [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(row.weights, [1, 1, 1, 1])
    assert row.truncated and row.tokens.dtype == np.int32 and row.weights.dtype == np.float32
    exact = scoring.span_row([1, 2], [3, 4, 5], max_length=4)  # 5 tokens = max_length + 1
    assert exact.truncated is False and exact.tokens.tolist() == [1, 2, 3, 4, 5]
    over = scoring.span_row([1, 2, 3], [4, 5, 6], max_length=4)  # one token too many
    assert over.truncated and over.tokens.tolist() == [2, 3, 4, 5, 6]


def test_paper_row_cut_on_the_right_at_the_context():
    row = scoring.paper_row([1, 2], [1, 2, 3, 4, 5, 6], pad_id=0, max_length=4)
    np.testing.assert_array_equal(row.tokens, [1, 2, 3, 4, 0])
    np.testing.assert_array_equal(row.weights, [0, 0, 1, 1])
    assert row.truncated and row.tokens.dtype == np.int32 and row.weights.dtype == np.float32
    fits = scoring.paper_row([1, 2], [1, 2, 3, 4], pad_id=0, max_length=4)
    assert not fits.truncated
    # A prompt longer than the cut text: no position is scored (the paper's rows do the same).
    assert scoring.paper_row([1] * 6, [1] * 6, 0, 4).weights.sum() == 0


@pytest.mark.parametrize("length, max_length, width", [
    (1, 64, 16), (16, 64, 16), (17, 64, 32), (33, 64, 64), (40, 32, 32), (64, 64, 64)])
def test_row_batches_are_bucketed_to_powers_of_two_of_at_least_16(length, max_length, width):
    assert scoring._bucket(length, max_length) == width


def test_row_scorer_covers_every_row_over_several_batches():
    """Five rows in batches of two (three batches, sorted by length), one of 18 tokens (17
    inputs: a 32-wide bucket) and one shorter than the smallest bucket: each sum equals the
    model's weighted NLL of that row alone, unpadded."""
    model, params = init(CONFIG)
    params = trained_scale(params)
    rows = [scoring.span_row([9] * 15, [1, 2, 3], 64),   # 18 tokens
            scoring.span_row([3, 4, 5], [6, 7], 64),
            scoring.paper_row([3, 4], [3, 4, 5, 6], 0, 64),
            scoring.span_row([8] * 30, [2, 1], 64),
            scoring.span_row([5], [6], 64)]
    sums = scoring.RowScorer(model, params, batch_size=2)(rows)
    assert sums.dtype == np.float64 and sums.shape == (5,)
    for row, got in zip(rows, sums):
        logits = model.apply({"params": params}, jnp.asarray(row.tokens[None, :-1]))
        nll = -jax.nn.log_softmax(logits[0])[np.arange(len(row.weights)), row.tokens[1:]]
        assert got == pytest.approx(float(np.sum(np.asarray(nll) * row.weights)), rel=1e-5)
