"""Every cell of the experiment matrix parses and builds (abstractly) at every scale."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

import codereason_jax.train  # noqa: F401 (registers TrainConfig)
from codereason_jax import gin_utils
from codereason_jax.checkpoints import CheckpointConfig
from codereason_jax.evaluate import EvalConfig
from codereason_jax.model import PanGuDecoder
from codereason_jax.model.config import ConfigError
from codereason_jax.optim import OptimizerConfig
from codereason_jax.trainer import TrainConfig
from numpy_reference import PAPER_CONTEXT, PAPER_SHAPES, PAPER_VOCAB, param_count

ROOT = gin_utils.PROJECT_ROOT
SCALES = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "gin/scales/*")))
CELLS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "gin/cells/*")))
PRETRAIN_CELLS = [c for c in CELLS if "/pretrain_" in c]
SFT_CELLS = [c for c in CELLS if "/sft_" in c]
# Which pre-trained model each tuning cell starts from (paper Table 3 naming: base, data).
SFT_BASE = {"nn": "NL_BASE", "nc": "NL_BASE", "cn": "CODE_BASE", "cc": "CODE_BASE",
            "uniform": "CODE_BASE", "stepwise_increase": "CODE_BASE",
            "stepwise_decrease": "CODE_BASE"}
# Parameters per scale from the closed form (numpy_reference; None: tiny is no paper size).
PARAMS = {"pangu_tiny": None, **{name: param_count(PAPER_VOCAB, PAPER_CONTEXT, layers, d)
                                 for name, (layers, d, _) in PAPER_SHAPES.items()}}


def _cell_name(path):
    return os.path.basename(path)[:-len(".gin")]


def _build(*gin_files, bindings=()):
    gin_utils.parse(list(gin_files), list(bindings))
    return (gin_utils.model_config(), gin_utils.build(TrainConfig),
            gin_utils.build(OptimizerConfig), gin_utils.build(CheckpointConfig))


def test_the_matrix_is_complete():
    assert [_cell_name(c) for c in PRETRAIN_CELLS] == [
        "pretrain_code", "pretrain_nl", "pretrain_stepwise_decrease",
        "pretrain_stepwise_increase", "pretrain_uniform"]
    assert sorted(_cell_name(c)[len("sft_"):] for c in SFT_CELLS) == sorted(SFT_BASE)
    assert [os.path.basename(s)[:-4] for s in SCALES] == sorted(PARAMS)


@pytest.mark.parametrize("scale", SCALES)
def test_every_cell_builds_at_every_scale(scale):
    from seqio_tasks import mixtures  # noqa: F401 (registers the mixtures)
    from seqio_tasks.registry import resolve_schedule

    model_configs = set()
    for cell in CELLS:
        model, train, optimizer, _ = _build(scale, cell)
        model_configs.add(model)
        name = _cell_name(cell)
        data = name if name.startswith("pretrain_") else {
            "sft_nn": "sft_text", "sft_cn": "sft_text", "sft_nc": "sft_text_code",
            "sft_cc": "sft_text_code"}.get(name, name)
        assert train.mixture == f"{data}_paper", cell
        assert train.sequence_length == model.max_seq_len
        schedule = resolve_schedule(train.mixture, train.num_steps)
        # Four phases for the stage-wise strategies, one stage for static mixtures.
        assert len(schedule.stages) == (1 if name.split("_", 1)[1] in ("nl", "code", "text",
                                                                        "nn", "nc", "cn", "cc")
                                        else 4), cell
        if name.startswith("pretrain_"):
            assert train.init_from is None
            assert optimizer.peak_learning_rate == 1e-4 and optimizer.warmup_steps == 500
        else:
            base = SFT_BASE[name[len("sft_"):]]
            other = "CODE_BASE" if base == "NL_BASE" else "NL_BASE"
            assert _build(scale, cell, bindings=[f"{base} = 'X'"])[1].init_from == "X"
            assert _build(scale, cell, bindings=[f"{other} = 'X'"])[1].init_from == (
                train.init_from)
            assert optimizer.peak_learning_rate == 2e-5 and not train.pack_instructions
    # One model per scale, whatever the cell; built abstractly (13B in seconds).
    (model,) = model_configs
    shapes = jax.eval_shape(lambda: PanGuDecoder(model).init(
        jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    count = sum(x.size for x in jax.tree.leaves(shapes))
    expected = PARAMS[os.path.basename(scale)[:-4]]
    if expected is None:
        assert count == param_count(model.vocab_size, model.max_seq_len, model.num_layers,
                                    model.d_model, model.d_ff, model.use_query_layer)
    else:
        assert count == expected


def test_the_embedded_corpora_are_one_binding_away():
    _, train, _, _ = _build("gin/scales/pangu_tiny.gin", "gin/cells/sft_stepwise_decrease.gin",
                            bindings=["matrix_mixture.corpora = 'embedded'"])
    assert train.mixture == "sft_stepwise_decrease_embedded"


def test_a_bad_corpora_binding_names_itself():
    with pytest.raises(ConfigError, match=r"matrix_mixture.corpora='web'"):
        _build("gin/scales/pangu_tiny.gin", "gin/cells/pretrain_nl.gin",
               bindings=["matrix_mixture.corpora = 'web'"])


def test_the_paper_learning_rate_variant_is_one_binding_away():
    _, _, optimizer, _ = _build("gin/scales/pangu_2_6b.gin", "gin/cells/pretrain_code.gin",
                                bindings=["OptimizerConfig.peak_learning_rate = 5e-5",
                                          "OptimizerConfig.warmup_steps = 2000"])
    assert (optimizer.peak_learning_rate, optimizer.warmup_steps) == (5e-5, 2000)


@pytest.mark.parametrize("eval_files", [("gin/eval/tables_2_3_6.gin",),
                                        ("gin/eval/table_4_cot.gin",),
                                        ("gin/eval/tables_2_3_6.gin", "gin/eval/paper_protocol.gin"),
                                        ("gin/eval/embedded.gin",)])
def test_eval_configs_name_registered_tasks(eval_files):
    import seqio

    from seqio_tasks import mixtures  # noqa: F401

    gin_utils.parse(["gin/models/pangu_2_6b.gin", *eval_files])
    config = gin_utils.build(EvalConfig)
    assert config.tasks and set(config.tasks) <= set(seqio.TaskRegistry.names())
    if "gin/eval/paper_protocol.gin" in eval_files:
        assert (config.mode, config.sampling) == ("paper", "paper")


def test_the_demo_run_file_builds():
    """`make demo`'s gin file (README's first command) is in the checkout and builds."""
    model, train, optimizer, checkpoint = _build("gin/runs/demo_cpu.gin")
    assert train.mixture == "pretrain_code_embedded" and model.vocab_size == 8192
    assert train.sequence_length <= model.max_seq_len and checkpoint.every_steps > 0
