"""Mixtures and stage-wise schedules: each cell of the paper's matrix is one name here.

Static mixtures are plain SeqIO mixtures (rates are relative weights, or SeqIO rate functions).
Scheduled mixtures are registered in ``seqio_tasks.schedules`` and, stage by stage, as SeqIO
mixtures named ``NAME_stage1`` ... so notebooks can inspect any stage with plain SeqIO.

Pre-training (text vs text+code): the paper trained on ~100 GB of text and ~50 GB of code, about
2:1 by bytes; our CODE mixtures use text:code = 2:1 by sequences (= tokens, under dense packing).
Instruction tuning: NN uses text instructions only; NC/CC add code instructions, statically at
Table 5's uniform 5:3, or with one of Table 5's three stage-wise strategies.
"""

from __future__ import annotations

import functools

from seqio_tasks import rates, schedules, tasks  # noqa: F401 (tasks registers what we mix)
from seqio_tasks.registry import add_mixture, add_scheduled_mixture

PRETRAIN_TEXT_TO_CODE = (2, 1)
SFT_TEXT_TO_CODE = schedules.PAPER_STRATEGIES["uniform"][0]


def register_matrix(suffix: str, text: str, code: str, text_instructions: str,
                    code_instructions: str) -> None:
    """The pre-training and tuning mixtures of the matrix over one set of corpora."""
    add_mixture(f"pretrain_nl_{suffix}", [(text, 1.0)])
    add_mixture(f"pretrain_code_{suffix}", [(text, PRETRAIN_TEXT_TO_CODE[0]),
                                            (code, PRETRAIN_TEXT_TO_CODE[1])])
    add_mixture(f"sft_text_{suffix}", [(text_instructions, 1.0)])
    add_mixture(f"sft_text_code_{suffix}", [(text_instructions, SFT_TEXT_TO_CODE[0]),
                                            (code_instructions, SFT_TEXT_TO_CODE[1])])
    # Natural proportions: every instruction example once; text and code by their token counts.
    add_mixture(f"sft_text_code_by_examples_{suffix}", [(text_instructions, rates.rate_num_examples),
                                                         (code_instructions, rates.rate_num_examples)])
    add_mixture(f"pretrain_code_by_tokens_{suffix}", [(text, rates.rate_num_tokens),
                                                       (code, rates.rate_num_tokens)])
    for strategy in schedules.PAPER_STRATEGIES:
        add_scheduled_mixture(
            f"sft_{strategy}_{suffix}",
            functools.partial(schedules.paper_strategy, strategy, text_instructions,
                              code_instructions, name=f"sft_{strategy}_{suffix}"))
        # Dynamic mixing in pre-training, the paper's open question, with the same ratios.
        add_scheduled_mixture(
            f"pretrain_{strategy}_{suffix}",
            functools.partial(schedules.paper_strategy, strategy, text, code,
                              name=f"pretrain_{strategy}_{suffix}"))


register_matrix("embedded", "embedded_text", "embedded_code", "embedded_text_instructions",
                "embedded_code_instructions")
register_matrix("paper", "text_corpus", "codeparrot", "paper_text_instructions",
                "paper_code_instructions")
# The paper's matrix over the corpora prepared as TFDS datasets (seqio_tasks/tfds_builders).
register_matrix("paper_tfds", "text_corpus_tfds", "codeparrot_tfds", "paper_text_instructions",
                "paper_code_instructions")
