"""Multiple-choice scoring (paper quirk, corrected, log-likelihood) and cached generation."""


import jax.numpy as jnp
import numpy as np
import pytest

from codereason_jax.evaluation import generation, scoring
from codereason_jax.model import PanGuConfig
from test_model import init, trained_scale


class CharVocabulary:
    """One token per character: hand-built cases stay readable."""
    pad_id = 0

    def encode(self, text):
        return [ord(c) for c in text]


class TableScorer:
    """NLL of predicting token t is table[t] (default 1.0), whatever the context."""
    max_length = 64

    def __init__(self, table):
        self.table = table

    def __call__(self, rows):
        return np.array([sum(w * self.table.get(int(t), 1.0)
                             for t, w in zip(r.tokens[1:], r.weights)) for r in rows])


def test_paper_row_reproduces_the_off_by_one():
    row = scoring.paper_row([5, 6], [5, 6, 7, 8], pad_id=0, max_length=16)
    np.testing.assert_array_equal(row.tokens, [5, 6, 7, 8, 0])
    # Input positions 2 and 3 carry the mask: they predict 8 and the padding after the end;
    # the span's first token (7) is never scored.
    np.testing.assert_array_equal(row.weights, [0, 0, 1, 1])


def test_span_row_scores_exactly_the_span():
    row = scoring.span_row([5, 6], [7, 8], max_length=16)
    np.testing.assert_array_equal(row.tokens, [5, 6, 7, 8])
    np.testing.assert_array_equal(row.weights, [0, 1, 1])  # predict 7, predict 8
    long_row = scoring.span_row(list(range(10, 30)), [7, 8], max_length=8)
    assert long_row.truncated and len(long_row.tokens) == 9
    np.testing.assert_array_equal(long_row.tokens[-2:], [7, 8])  # the span survives


def _examples(candidates, label=0, labels="0"):
    return [{"example_id": b"q1", "candidate": i, "inputs": prompt, "targets": scored,
             "label": label, "labels": labels} for i, (prompt, scored) in enumerate(candidates)]


def test_modes_on_a_hand_built_case_where_the_quirk_flips_the_answer():
    # Candidate 0's span "xa": 'x' is very unlikely (NLL 9), 'a' likely (0.1).
    # Candidate 1's span "bb": both tokens NLL 2. Padding (id 0) costs 0.5.
    table = {ord("x"): 9.0, ord("a"): 0.1, ord("b"): 2.0, 0: 0.5}
    examples = _examples([("Q:", "xa"), ("Q:", "bb")])
    vocab, scorer = CharVocabulary(), TableScorer(table)
    paper = scoring.score_multiple_choice(examples, vocab, scorer, "paper")[0]
    corrected = scoring.score_multiple_choice(examples, vocab, scorer, "corrected")[0]
    # paper: candidate 0 scores mean(0.1, 0.5) = 0.3, candidate 1 mean(2, 0.5) = 1.25 -> 0.
    assert paper.scores == pytest.approx([0.3, 1.25]) and paper.prediction == 0
    # corrected: mean(9, 0.1) = 4.55 vs mean(2, 2) = 2 -> 1.
    assert corrected.scores == pytest.approx([4.55, 2.0]) and corrected.prediction == 1
    loglik = scoring.score_multiple_choice(examples, vocab, scorer, "loglik")[0]
    assert loglik.scores == pytest.approx([9.1, 4.0]) and loglik.prediction == 1
    norm = scoring.score_multiple_choice(examples, vocab, scorer, "loglik_norm")[0]
    assert norm.scores == pytest.approx([4.55, 2.0])


def test_ties_go_to_the_first_candidate_and_multi_answer_gold():
    examples = _examples([("Q:", "ab"), ("Q:", "ab"), ("Q:", "zz")], label=1, labels="1,2")
    result = scoring.score_multiple_choice(examples, CharVocabulary(), TableScorer({}),
                                           "corrected")[0]
    assert result.prediction == 0 and not result.correct
    examples = _examples([("Q:", "zz"), ("Q:", "ab")], label=0, labels="0,1")
    table = {ord("z"): 5.0}
    result = scoring.score_multiple_choice(examples, CharVocabulary(), TableScorer(table),
                                           "corrected")[0]
    assert result.prediction == 1 and result.correct  # any gold answer counts (JEC-QA rule)
    with pytest.raises(ValueError, match="Unknown scoring mode"):
        scoring.score_multiple_choice(examples, CharVocabulary(), TableScorer({}), "ppl")


CONFIG = PanGuConfig(vocab_size=128, num_layers=3, d_model=32, num_heads=4, d_ff=64,
                     max_seq_len=64, dropout_rate=0.0)


def _naive_greedy(model, params, prompt, steps):
    tokens = list(prompt)
    for _ in range(steps):
        logits = model.apply({"params": params}, jnp.asarray([tokens]))
        tokens.append(int(jnp.argmax(logits[0, -1])))
    return tokens[len(prompt):]


def test_greedy_generation_with_cache_matches_naive_decoding():
    model, params = init(CONFIG)
    params = trained_scale(params)
    prompts = [[5, 6, 7, 8, 9], [11, 12]]  # different lengths: left-padded in one batch
    config = generation.SamplingConfig(max_new_tokens=8)
    out = generation.generate(model, params, prompts, eos_id=-1, config=config)
    for prompt, got in zip(prompts, out):
        assert got == _naive_greedy(model, params, prompt, 8)


def test_sampling_is_seeded_and_topk1_is_greedy():
    model, params = init(CONFIG)
    params = trained_scale(params, 3.0)
    prompts = [[5, 6, 7], [8, 9, 10, 11]]

    def run(**kwargs):
        config = generation.SamplingConfig(method="sample", max_new_tokens=10, **kwargs)
        return generation.generate(model, params, prompts, eos_id=-1, config=config)

    assert run(seed=1) == run(seed=1)
    assert run(seed=1) != run(seed=2)
    greedy = generation.generate(model, params, prompts, eos_id=-1,
                                 config=generation.SamplingConfig(max_new_tokens=10))
    assert run(seed=3, top_k=1) == greedy


def test_generation_stops_at_eos_and_refuses_overlong_requests():
    model, params = init(CONFIG)
    params = trained_scale(params)
    first = generation.generate(model, params, [[5, 6, 7]], eos_id=-1,
                                config=generation.SamplingConfig(max_new_tokens=6))[0]
    eos = first[2]
    cut = generation.generate(model, params, [[5, 6, 7]], eos_id=eos,
                              config=generation.SamplingConfig(max_new_tokens=6))[0]
    assert cut == first[:first.index(eos)]
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        generation.generate(model, params, [[1] * 60], eos_id=-1,
                            config=generation.SamplingConfig(max_new_tokens=10))


def test_penalties_discourage_repeats():
    model, params = init(CONFIG)
    params = trained_scale(params)
    plain = generation.generate(model, params, [[5, 6]], eos_id=-1,
                                config=generation.SamplingConfig(max_new_tokens=20))[0]
    penalised = generation.generate(
        model, params, [[5, 6]], eos_id=-1,
        config=generation.SamplingConfig(max_new_tokens=20, frequency_penalty=100.0))[0]
    assert len(set(penalised)) == 20 and len(set(plain)) < 20


def _smoothed_bleu4(pairs):
    """Corpus BLEU-4 x 100 of (reference tokens, hypothesis tokens) pairs, one segment each,
    written out here: clipped n-gram matches, add-one smoothing at every order, brevity
    penalty exp(1 - r / c) for c <= r. Also returns each pair's counts in the results file's
    layout (matches 1-4, possible 1-4, hypothesis length, reference length)."""
    import collections
    import math
    rows = []
    for reference, hypothesis in pairs:
        row = []
        for order in (1, 2, 3, 4):
            grams = [collections.Counter(tuple(t[i:i + order])
                                         for i in range(len(t) - order + 1))
                     for t in (reference, hypothesis)]
            row.append(sum(min(c, grams[0][g]) for g, c in grams[1].items()))
        row += [max(0, len(hypothesis) - order + 1) for order in (1, 2, 3, 4)]
        rows.append(row + [len(hypothesis), len(reference)])
    totals = [sum(column) for column in zip(*rows)]
    log_precision = sum(math.log((totals[o] + 1) / (totals[4 + o] + 1)) for o in range(4)) / 4
    c, r = totals[8], totals[9]
    penalty = 0.0 if c == 0 else 1.0 if c > r else math.exp(1 - r / c)
    return 100 * math.exp(log_precision) * penalty, rows


def test_evaluate_cli_writes_results(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import sentencepiece
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "codereason_jax.evaluate", "--gin_file=gin/models/pangu_tiny.gin",
         "--tasks=eval_embedded_codeqa,eval_embedded_codegen", f"--output={output}",
         "--gin.EvalConfig.max_examples=4", "--gin.EvalConfig.max_new_tokens=8",
         "--gin.EvalConfig.mode='paper'",
         "--gin.EvalConfig.contamination_corpora=('embedded_code',)"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["checkpoint"] is None and results["model"]["d_model"] == 128
    qa = results["tasks"]["eval_embedded_codeqa"]
    assert qa["n"] == 4 and qa["mode"] == "paper" and len(qa["examples"]) == 4
    assert qa["split"] == "validation"
    low, high = qa["metrics"]["accuracy_ci95"]
    assert low <= qa["metrics"]["accuracy"] <= high
    assert all(len(e["scores"]) == 2 for e in qa["examples"])
    # Lower is better in every mode; ties go to the first candidate.
    for e in qa["examples"]:
        assert e["prediction"] == e["scores"].index(min(e["scores"])), e
    correct = [e["prediction"] in e["labels"] for e in qa["examples"]]
    assert qa["metrics"]["accuracy"] == pytest.approx(100 * sum(correct) / 4, abs=1e-9)
    # The embedded evaluation sets come from validation files: none is in the training code
    # (a positive case: test_contamination_is_the_share_of_examples_found_in_each_corpus).
    assert qa["contamination"] == {"embedded_code": 0.0}
    gen = results["tasks"]["eval_embedded_codegen"]
    assert gen["n"] == 4 and gen["split"] == "validation" and "bleu_paper" in gen["metrics"]
    assert gen["contamination"] == {"embedded_code": 0.0}
    # Corpus BLEU recomputed from the written predictions and references, on the task's
    # SentencePiece ids (reference as is, prediction stripped).
    vocabulary = sentencepiece.SentencePieceProcessor(model_file=results["vocabulary"]["file"])
    pairs = [(vocabulary.encode(e["reference"]), vocabulary.encode(e["prediction"].strip()))
             for e in gen["examples"]]
    assert all(reference for reference, _ in pairs)
    bleu, counts = _smoothed_bleu4(pairs)
    assert [e["bleu_counts"] for e in gen["examples"]] == counts
    assert gen["metrics"]["bleu_corpus"] == pytest.approx(bleu, rel=1e-9)
    bad = subprocess.run(
        [sys.executable, "-m", "codereason_jax.evaluate", "--gin_file=gin/models/pangu_tiny.gin",
         "--tasks=eval_nope", f"--output={output}"], cwd=root, capture_output=True, text=True,
        timeout=1200)
    assert bad.returncode == 2 and "unknown tasks ['eval_nope']" in bad.stderr


def test_contamination_is_the_share_of_examples_found_in_each_corpus(monkeypatch):
    """What a task's "contamination" entry holds, per corpus named in the config: the share of
    examples with an n-gram (n = contamination_n) in that corpus's train texts (given here
    in place of a SeqIO task's, which would import TensorFlow)."""
    from codereason_jax.evaluation import task_eval
    from codereason_jax.evaluation.eval_config import EvalConfig
    corpora = {"corpus_a": ["x a b c d e y", "q r"], "corpus_b": ["v w x y z", "p q r", "s t u"]}
    monkeypatch.setattr(task_eval, "_corpus_texts", corpora.__getitem__)
    texts = ["a b c d e", "v w x y z", "p q r s t"]
    config = EvalConfig(contamination_corpora=("corpus_a", "corpus_b"), contamination_n=3)
    # corpus_a holds "a b c" (example 0); corpus_b "v w x" (1) and "p q r" (2).
    assert task_eval._contamination(texts, config) == {"corpus_a": 1 / 3, "corpus_b": 2 / 3}
    longer = EvalConfig(contamination_corpora=("corpus_b",), contamination_n=5)
    assert task_eval._contamination(texts, longer) == {"corpus_b": 1 / 3}  # only "v w x y z"


def test_embedded_eval_sets_are_clean_of_train_and_found_in_their_source():
    from codereason_jax.evaluation.eval_metrics import contamination
    from seqio_tasks.sources import embedded
    texts = [q["query"] + " " + q["code"] for q in list(embedded.code_qa_pairs("validation"))[:8]]
    train = [d["text"] for d in embedded.code_documents("train")]
    validation = [d["text"] for d in embedded.code_documents("validation")]
    assert contamination.ngram_overlap(texts, train)["fraction"] == 0.0
    assert contamination.ngram_overlap(texts, validation)["fraction"] == 1.0


@pytest.mark.skipif(not __import__("os").path.isdir(
    __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "..", "shared",
                               "data", "mbpp")), reason="../shared/data/mbpp is not present")
def test_evaluate_mbpp_pass_at_k_on_real_data(tmp_path):
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = tmp_path / "mbpp.json"
    result = subprocess.run(
        [sys.executable, "-m", "codereason_jax.evaluate", "--gin_file=gin/models/pangu_tiny.gin",
         "--tasks=eval_mbpp_with_tests", f"--output={output}",
         "--gin.EvalConfig.split={'eval_mbpp_with_tests': 'test'}",
         "--gin.EvalConfig.max_examples=3", "--gin.EvalConfig.max_new_tokens=4",
         "--gin.EvalConfig.num_samples=2", "--gin.EvalConfig.mesh_shape=(2, 1, 4)",
         f"--gin.EvalConfig.data_dir='{os.path.join(root, '..', 'shared', 'data')}'"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert result.returncode == 0, result.stderr[-3000:]
    task = json.loads(output.read_text())["tasks"]["eval_mbpp_with_tests"]
    # An untrained model passes nothing; every completion really went through the sandbox.
    assert task["metrics"]["pass@1"] == 0.0 and task["metrics"]["pass@1_unbiased"] == 0.0
    assert all(e["execution"] == ["failed", "failed"] for e in task["examples"])
