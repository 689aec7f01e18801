"""Model configs: parameter counts of the paper's sizes, gin strictness, clear errors."""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import pytest

from codereason_jax import gin_utils
from codereason_jax.model import ConfigError, PanGuConfig, PanGuDecoder
from codereason_jax.model.abstract import param_table
from numpy_reference import (PAPER_CONTEXT, PAPER_SHAPES, PAPER_VOCAB, param_count,
                             param_count_parts)


def config_from(*gin_files, bindings=()):
    gin_utils.parse(list(gin_files), list(bindings))
    return gin_utils.model_config()


def _by_part(rows):
    """Sizes of a param table summed by part (the keys of numpy_reference.param_count_parts)."""
    parts = dict.fromkeys(("embeddings", "attention", "mlp", "layer_norms"), 0)
    for row in rows:
        leaf = row.name.split("/")
        part = ("embeddings" if leaf[-1].endswith("_embeddings") else
                "attention" if "attention" in leaf else "mlp" if "mlp" in leaf else
                "layer_norms" if leaf[-2].startswith("ln_") else row.name)
        parts[part] += row.size
    return parts


# The published counts (docs/model.md, the gin files' comments), checked against the closed form.
PUBLISHED = {"pangu_350m": 345_368_576, "pangu_2_6b": 2_625_295_360,
             "pangu_13b": 12_800_870_400}


@pytest.mark.parametrize("scale", sorted(PAPER_SHAPES))
def test_paper_parameter_counts_equal_the_closed_form(scale):
    layers, d, heads = PAPER_SHAPES[scale]
    config = config_from(f"gin/models/{scale}.gin")
    assert (config.vocab_size, config.max_seq_len, config.num_layers, config.d_model,
            config.num_heads, config.d_ff, config.use_query_layer) == (
        PAPER_VOCAB, PAPER_CONTEXT, layers, d, heads, 4 * d, True)
    expected = param_count(PAPER_VOCAB, PAPER_CONTEXT, layers, d)
    assert expected == PUBLISHED[scale]
    rows = param_table(config)  # abstract: no weights are allocated
    assert _by_part(rows) == param_count_parts(PAPER_VOCAB, PAPER_CONTEXT, layers, d)
    assert sum(r.size for r in rows) == expected
    assert config.num_params() == expected


def test_closed_form_by_hand_on_a_small_model():
    """The closed form itself, worked by hand for V=10, S=4, 2 layers, d=2, d_ff=8:
    embeddings 10·2 + 4·2 + 4·2 = 36; attention 2·(4·4 + 8) = 48; MLP 2·(2·2·8 + 8 + 2) = 84;
    LayerNorms 2·8 + 4 = 20; 188 in all, 180 without the top-query table (8)."""
    assert param_count_parts(10, 4, 2, 2, 8) == {"embeddings": 36, "attention": 48, "mlp": 84,
                                                 "layer_norms": 20}
    assert param_count(10, 4, 2, 2, 8) == 188
    assert param_count(10, 4, 2, 2, 8, query_layer=False) == 180


@pytest.mark.parametrize("use_query_layer", [True, False])
def test_small_model_counts_equal_the_closed_form(tiny_config, use_query_layer):
    """Off the paper's shapes (d_ff != 4d, no query layer) the model still matches."""
    config = dataclasses.replace(tiny_config, use_query_layer=use_query_layer)
    expected = param_count(config.vocab_size, config.max_seq_len, config.num_layers,
                           config.d_model, config.d_ff, query_layer=use_query_layer)
    rows = param_table(config)
    assert sum(r.size for r in rows) == expected == config.num_params()
    assert _by_part(rows) == param_count_parts(config.vocab_size, config.max_seq_len,
                                               config.num_layers, config.d_model, config.d_ff,
                                               query_layer=use_query_layer)


def test_codellm_vocab_parameter_count():
    """With the ChatGLM vocabulary of the paper's CodePanGu2.6B (pangu.md §5)."""
    config = config_from("gin/models/pangu_2_6b.gin",
                         bindings=["PanGuConfig.vocab_size = 130344"])
    expected = param_count(130_344, PAPER_CONTEXT, 32, 2560)
    assert expected == 2_856_576_000  # the number docs/model.md states
    assert sum(r.size for r in param_table(config)) == expected


def test_param_table_rows_and_axes():
    rows = {r.name: r for r in param_table(config_from("gin/models/pangu_2_6b.gin"))}
    assert rows["word_embeddings"].shape == (40000, 2560)
    assert rows["word_embeddings"].logical_axes == ("vocab", "embed")
    assert rows["top_query_embeddings"].shape == (1024, 2560)
    assert rows["block_30/attention/query/kernel"].shape == (2560, 32, 80)
    assert rows["block_30/attention/query/kernel"].logical_axes == ("embed", "heads", "kv")
    assert rows["query_layer/mlp/wo/kernel"].logical_axes == ("mlp", "embed")
    assert "block_31/ln_1/scale" not in rows  # 31 ordinary blocks + the query layer
    assert all(r.dtype == "float32" for r in rows.values())


def test_scanned_table_has_layers_axis():
    config = config_from("gin/models/pangu_2_6b.gin",
                         bindings=["PanGuConfig.scan_layers = True"])
    rows = {r.name: r for r in param_table(config)}
    assert rows["blocks/mlp/wi/kernel"].shape == (31, 2560, 10240)
    assert rows["blocks/mlp/wi/kernel"].logical_axes == ("layers", "embed", "mlp")
    assert sum(r.size for r in rows.values()) == param_count(PAPER_VOCAB, PAPER_CONTEXT, 32, 2560)


def test_tiny_gin_builds_a_plain_config():
    config = config_from("gin/models/pangu_tiny.gin")
    assert type(config) is PanGuConfig
    assert config == PanGuConfig(vocab_size=8192, max_seq_len=256, num_layers=4, d_model=128,
                                 num_heads=4, d_ff=512)


@pytest.mark.parametrize("changes,message", [
    (dict(num_heads=3), r"PanGuConfig.d_model=32 is not divisible by PanGuConfig.num_heads=3"),
    (dict(vocab_size=0), r"PanGuConfig.vocab_size must be a positive integer, got 0"),
    (dict(vocab_size=-5), r"PanGuConfig.vocab_size"),
    (dict(max_seq_len=0), r"PanGuConfig.max_seq_len"),
    (dict(activation="relu"), r"PanGuConfig.activation='relu' is not one of"),
    (dict(num_layers=1), r"PanGuConfig.num_layers=1 counts the query layer"),
    (dict(dropout_rate=1.0), r"PanGuConfig.dropout_rate"),
    (dict(dtype="float8"), r"PanGuConfig.dtype"),
])
def test_bad_config_names_the_field(tiny_config, changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(tiny_config, **changes)


def test_divisibility_error_suggests_a_divisor(tiny_config):
    with pytest.raises(ConfigError, match=r"e\.g\. 4\)"):
        dataclasses.replace(tiny_config, num_heads=5)


def test_sequence_longer_than_position_table(tiny_config):
    model = PanGuDecoder(tiny_config)
    full = jnp.zeros((1, tiny_config.max_seq_len), jnp.int32)  # the whole table: accepted
    shapes = jax.eval_shape(model.init, jax.random.key(0), full)
    assert shapes["params"]["position_embeddings"].value.shape[0] == tiny_config.max_seq_len
    too_long = jnp.zeros((1, tiny_config.max_seq_len + 1), jnp.int32)
    with pytest.raises(ConfigError, match=r"exceeds PanGuConfig.max_seq_len=32"):
        model.init({"params": jax.random.key(0)}, too_long)


def test_missing_required_value_is_named(tmp_path):
    partial = tmp_path / "partial.gin"
    partial.write_text("PanGuConfig.vocab_size = 100\nPanGuConfig.max_seq_len = 64\n"
                       "PanGuConfig.d_model = 64\n")
    with pytest.raises(ConfigError, match=r"missing required values: num_layers, num_heads, "
                                          r"d_ff.*PanGuConfig.num_layers = \.\.\."):
        config_from(str(partial))


def test_unknown_parameter_is_rejected_at_parse_time():
    with pytest.raises(ValueError, match="d_modle"):
        config_from("gin/models/pangu_tiny.gin", bindings=["PanGuConfig.d_modle = 64"])


def test_gin_flag_rewriting():
    rest, bindings = gin_utils.split_gin_bindings(
        ["--gin_file=a.gin", "--gin.PanGuConfig.dropout_rate=0.0", "--other"])
    assert rest == ["--gin_file=a.gin", "--other"]
    assert bindings == ["PanGuConfig.dropout_rate = 0.0"]
    with pytest.raises(ConfigError, match="--gin.NAME=VALUE"):
        gin_utils.split_gin_bindings(["--gin.PanGuConfig.dropout_rate"])
    config = config_from("gin/models/pangu_tiny.gin", bindings=bindings)
    assert config.dropout_rate == 0.0


def test_missing_gin_file_is_named():
    with pytest.raises(ConfigError, match="gin/models/nope.gin"):
        config_from("gin/models/nope.gin")


def teardown_module():
    gin.clear_config()
