"""Scores for generated text and code, one module per job.

* `bleu`: MBPP BLEU, paper-faithful (`paper_bleu`) and proper (`corpus_bleu`), and sacreBLEU;
* `pass_rate`: unbiased pass@k of executed samples;
* `dureader`: DuReader-robust EM/F1;
* `bootstrap`: percentile bootstrap intervals and paired differences;
* `contamination`: the n-gram overlap of eval examples with a training corpus.

All BLEU values are on the 0-100 scale; pass@k and bootstrap values are fractions in [0, 1].
"""
