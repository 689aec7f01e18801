"""Readers of the evaluation benchmarks in the formats their authors released.

One ``read_<name>`` per data set. Each returns a :class:`Records` (a plain ``list`` of
normalized dicts holding only str/int/list values) so that the prompt templates in
``seqio_tasks/eval_templates.py`` never see a file format. With ``path=None`` the file is looked
up under the data root (``$CODEREASON_DATA_DIR``, see ``files.py``); a missing file raises a
:class:`DataFileError` saying which file to fetch from where and where to put it.

Published files hold records that cannot be scored (an empty answer list, an answer that is
not an option, a wrong number of options, undecodable bytes, a repeated id, a missing field).
Every reader validates each record and, by ``ReadPolicy`` (``seqio_tasks.sources.rows``), skips
and counts it by reason (``Records.skipped``, with the first places in ``skipped_at``) or, in
strict mode, stops at it naming ``file:line`` and the field. A file with more skipped records
than ``max_skipped_fraction`` (5 %) is an error. What is wrong with the whole file (not JSON,
no header, the wrong top-level type) is always an error.

Records dropped by a rule of the paper's own loaders are counted apart in
``Records.filtered``: ScienceQA's ``text_only`` drops items with an image (``has image``) and
``require_lecture_and_solution`` those whose lecture or solution is empty
(``empty lecture or solution``); OCNLI / CMNLI items labelled ``-`` (no annotator majority)
have no gold answer and are filtered as ``no gold label``, as the paper's loader drops them.

Option letters are read as written in the files: full-width (``Ａ``), lower case and with
surrounding whitespace are the same letter. Ids are normalized to ``str`` (MBPP keeps its
integer ``task_id``).
"""

from __future__ import annotations

# The readers live in one module per benchmark family; the names below are the public ones.
# ``X as X`` re-exports the constants and helpers callers import from here (mbpp_split, ...).
from seqio_tasks.sources.benchmarks.chinese_reading import NLI_LABELS as NLI_LABELS
from seqio_tasks.sources.benchmarks.chinese_reading import NO_MAJORITY as NO_MAJORITY
from seqio_tasks.sources.benchmarks.chinese_reading import (read_c3, read_cmnli, read_dureader,
                                                            read_ocnli)
from seqio_tasks.sources.benchmarks.exams import CEVAL_COLUMNS as CEVAL_COLUMNS
from seqio_tasks.sources.benchmarks.exams import LETTERS as LETTERS
from seqio_tasks.sources.benchmarks.exams import SCIENCEQA_FIELD_SPLITS as SCIENCEQA_FIELD_SPLITS
from seqio_tasks.sources.benchmarks.exams import (read_ekar, read_jecqa, read_logic,
                                                  read_scienceqa)
from seqio_tasks.sources.benchmarks.programming import MBPP_SPLITS as MBPP_SPLITS
from seqio_tasks.sources.benchmarks.programming import mbpp_split as mbpp_split
from seqio_tasks.sources.benchmarks.programming import read_cosqa, read_mbpp
from seqio_tasks.sources.rows import ReadPolicy, Records

__all__ = ["Records", "ReadPolicy", "read_logic", "read_jecqa", "read_scienceqa", "read_ekar",
           "read_cosqa", "read_mbpp", "read_c3", "read_ocnli", "read_cmnli", "read_dureader"]
