"""The paper's zero-shot templates: benchmark records -> what the scorer and generator need.

Multiple-choice tasks are scored by perplexity comparison in the "channel" direction of the
paper's released ``tasks.py``: each candidate is ``prompt + scored`` and only ``scored`` (the
template's last slot) is scored; the candidate with the lowest per-token perplexity is the
prediction. Each function returns::

    {"id": str, "candidates": [{"prompt": str, "scored": str}, ...], "label": int,
     "labels": [int, ...]}

The strings are the released code's, character for character (full-width vs ASCII
punctuation, the typo "anwser", missing spaces); see docs/evaluation.md,
"Templates". Do not tidy them.

Gold answers and JEC-QA: ``labels`` lists every gold candidate index and ``label`` is the first.
JEC-QA questions can have several correct options, but an argmin picks one, so the scorer
should apply the lenient rule lm-eval uses for AGIEval JEC-QA: a prediction is correct iff the
argmin candidate is in ``labels`` (:func:`is_correct`). The stricter alternative is to evaluate
only single-answer questions (:func:`single_answer_only`). The paper does not say which it did;
its released loader compares one integer ``answer`` per item, which fits either a single-answer
subset or a file reduced to one gold index.

Generation tasks return ``{"id", "prompt", ...references}``: see :func:`mbpp_prompt` and
:func:`dureader_prompt`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

Record = dict[str, Any]

# C3: the released loader joins the dialogue lines with no separator ("".join(instance[0])).
C3_DIALOGUE_JOINER = ""
NLI_WORDS = ("对", "或", "错")  # entailment, neutral, contradiction


def _example(record_id: str, pairs: Iterable[tuple[str, str]], labels: list[int]) -> Record:
    return {
        "id": str(record_id),
        "candidates": [{"prompt": prompt, "scored": scored} for prompt, scored in pairs],
        "label": labels[0],
        "labels": list(labels),
    }


def is_correct(example: Record, predicted: int) -> bool:
    """The scoring rule for every multiple-choice task: the argmin candidate is a gold one."""
    return predicted in example["labels"]


def single_answer_only(records: Iterable[Record]) -> list[Record]:
    """JEC-QA records with exactly one gold option: the strict alternative to :func:`is_correct`."""
    return [r for r in records if len(r["labels"]) == 1]


# ----------------------------------------------------------------------------- multiple choice

def logic_candidates(record: Record) -> Record:
    """C-Eval logic: ``该答案：{choice}，可以回答如下问题：`` + ``{question}。``."""
    return _example(record["id"], ((f"该答案：{choice}，可以回答如下问题：", f"{record['question']}。")
                                   for choice in record["choices"]), [record["label"]])


def jecqa_candidates(record: Record) -> Record:
    """JEC-QA: ``该答案：{choice}，可以回答以下问题：`` + ``{statement}`` (note 以下, not 如下)."""
    return _example(record["id"], ((f"该答案：{choice}，可以回答以下问题：", record["question"])
                                   for choice in record["choices"]), record["labels"])


def scienceqa_candidates(record: Record) -> Record:
    """ScienceQA: ``Lecture:{lecture}\\n anwser：{choice} can answer the following question：``
    + ``{question}`` (ASCII colon after Lecture, full-width colons after, typo kept)."""
    lecture = record["lecture"]
    return _example(record["id"], (
        (f"Lecture:{lecture}\n anwser：{choice} can answer the following question：",
         record["question"]) for choice in record["choices"]), [record["label"]])


def scienceqa_cot_candidates(record: Record) -> Record:
    """ScienceQA with the gold rationale as input (paper Table 4), scoring the ``solution``.

    Inferred from lines commented out in the released loader (docs/evaluation.md), not confirmed.
    """
    lecture, question = record["lecture"], record["question"]
    return _example(record["id"], (
        (f"Lecture:{lecture}\n question：{question}\n anwser：{choice}\n This answer comes from "
         "the following reasoning：", record["solution"]) for choice in record["choices"]),
        [record["label"]])


def ekar_candidates(record: Record) -> Record:
    """E-KAR: ``根据推理关系:{question}\\n可以得到类比推理关系为：`` + ``{choice}``.

    Unlike the other tasks the candidate itself is scored, so length normalisation matters.
    """
    prompt = f"根据推理关系:{record['question']}\n可以得到类比推理关系为："
    return _example(record["id"], ((prompt, choice) for choice in record["choices"]),
                    [record["label"]])


def ekar_cot_candidates(record: Record) -> Record:
    """E-KAR with gold explanations (paper Table 4): prompt ends with the choice and a newline,
    scored ``因为{explanation[0]},所以{explanation[i+1]}`` (ASCII comma) for candidate i.

    Inferred from lines commented out in the released loader (docs/evaluation.md), not confirmed.
    The scored span holds the candidate's own explanation, which may explain the jump to ~70%.
    """
    explanation, n = record["explanation"], len(record["choices"])
    if len(explanation) < n + 1:
        raise ValueError(f"E-KAR record {record['id']!r}: CoT needs {n + 1} explanations (query "
                         f"then one per choice), got {len(explanation)}.")
    question = record["question"]
    return _example(record["id"], (
        (f"根据推理关系:{question}\n可以得到类比推理关系为：{choice}\n",
         f"因为{explanation[0]},所以{explanation[i + 1]}")
        for i, choice in enumerate(record["choices"])), [record["label"]])


def cosqa_candidates(record: Record) -> Record:
    """CoSQA: ``{query}? Answered code is correct:`` / ``...wrong:`` + ``{code}``.

    Candidate 0 ("correct") is gold iff the pair's label is 1.
    """
    query, code = record["query"], record["code"]
    return _example(record["id"], ((f"{query}? Answered code is correct:", code),
                                   (f"{query}? Answered code is wrong:", code)),
                    [0 if record["label"] == 1 else 1])


def c3_candidates(record: Record) -> Record:
    """C3: ``问：{question}\\n答：{choice}\\n该答案来自对话：`` + the dialogue.

    The dialogue lines are joined with ``C3_DIALOGUE_JOINER`` (nothing), as the released loader
    does, not with the reader's newline-joined ``context``.
    """
    context = C3_DIALOGUE_JOINER.join(record["dialogue"])
    return _example(record["id"], ((f"问：{record['question']}\n答：{choice}\n该答案来自对话：", context)
                                   for choice in record["choices"]), [record["label"]])


def nli_candidates(record: Record) -> Record:
    """OCNLI / CMNLI: ``{s1}？对，`` / ``{s1}？或，`` / ``{s1}？错，`` + ``{s2}``, full-width ？ and ，."""
    return _example(record["id"], ((f"{record['premise']}？{word}，", record["hypothesis"])
                                   for word in NLI_WORDS), [record["label"]])


# ----------------------------------------------------------------------------- generation

def mbpp_prompt(record: Record) -> Record:
    """MBPP as the paper ran it: generate straight from the stripped task text.

    No tests, signature or "Code:" suffix (Table 1's template is not what the code does), so
    the function name is unknowable and only BLEU against ``reference`` is meaningful.
    """
    return {
        "id": str(record["task_id"]),
        "prompt": record["prompt"].strip(),
        "reference": record["code"],
        "tests": list(record["tests"]),
        "setup_code": record["setup_code"],
        "test_imports": list(record["test_imports"]),
    }


def mbpp_prompt_with_tests(record: Record) -> Record:
    """MBPP for pass@k (not the paper's prompt): the task and its first test in a docstring.

    Showing one assert, as bigcode-evaluation-harness does, fixes the function name and call
    signature, so executing the tests measures correctness rather than guessing names.
    """
    example = mbpp_prompt(record)
    example["prompt"] = f'"""\n{example["prompt"]}\n{record["tests"][0]}\n"""\n'
    return example


def dureader_prompt(record: Record) -> Record:
    """DuReader: ``阅读文章:{context}\\n问：{question}\\n答：`` (context and question stripped, as
    in the released loader); the answer is generated and scored against ``references``."""
    return {
        "id": str(record["id"]),
        "prompt": f"阅读文章:{record['context'].strip()}\n问：{record['question'].strip()}\n答：",
        "references": list(record["answers"]),
    }


MULTIPLE_CHOICE_TEMPLATES: dict[str, Callable[[Record], Record]] = {
    "logic": logic_candidates,
    "jecqa": jecqa_candidates,
    "scienceqa": scienceqa_candidates,
    "scienceqa_cot": scienceqa_cot_candidates,
    "ekar": ekar_candidates,
    "ekar_cot": ekar_cot_candidates,
    "cosqa": cosqa_candidates,
    "c3": c3_candidates,
    "ocnli": nli_candidates,
    "cmnli": nli_candidates,
}

GENERATION_TEMPLATES: dict[str, Callable[[Record], Record]] = {
    "mbpp": mbpp_prompt,
    "mbpp_with_tests": mbpp_prompt_with_tests,
    "dureader": dureader_prompt,
}
