"""An independent float64 numpy forward pass of PanGu-α, written from pangu.md's equations,
and the model's parameter count in closed form.

Used to check the Flax model's layer math (LN placement, the query layer's inputs, residuals,
tied head) and its size rather than only its self-consistency.
"""

import numpy as np


def _layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _proj(x, p, n_in):
    k = np.asarray(p["kernel"], np.float64)
    return np.tensordot(x, k, axes=n_in) + np.asarray(p["bias"], np.float64)


def _fast_gelu(x):
    return x / (1.0 + np.exp(-1.702 * x))


def _block(h, p, mask, cfg, query_inputs=None, maps=None):
    x = _layer_norm(h, p["ln_1"], cfg.layer_norm_epsilon)
    q_in = x if query_inputs is None else query_inputs
    att = p["attention"]
    q = _proj(q_in, att["query"], 1)   # [T, H, D]
    k = _proj(x, att["key"], 1)
    v = _proj(x, att["value"], 1)
    scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(cfg.head_dim)
    scores = np.where(mask[None], scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    if maps is not None:
        maps.append(probs)
    a = _proj(np.einsum("hts,shd->thd", probs, v), att["output"], 2)
    u = h + a
    m = _proj(_fast_gelu(_proj(_layer_norm(u, p["ln_2"], cfg.layer_norm_epsilon),
                               p["mlp"]["wi"], 1)), p["mlp"]["wo"], 1)
    return u + m


def forward(params, cfg, tokens, positions, segment_ids, maps=None):
    """Logits [T, V] for one row (float64); params as returned by model.init (unboxed).

    ``maps``, a list, receives each block's attention probabilities [heads, T, T] in order.
    """
    params = _to_f64(params)
    t = len(tokens)
    idx = np.arange(t)
    mask = (idx[None, :] <= idx[:, None]) & (segment_ids[:, None] == segment_ids[None, :])
    word = params["word_embeddings"]
    h = word[tokens] + params["position_embeddings"][positions]
    for i in range(cfg.num_ordinary_layers):
        h = _block(h, params[f"block_{i}"], mask, cfg, maps=maps)
    g = _layer_norm(h, params["ln_f"], cfg.layer_norm_epsilon)
    if cfg.use_query_layer:
        g = _block(g, params["query_layer"], mask, cfg,
                   query_inputs=params["top_query_embeddings"][positions], maps=maps)
    return g @ word.T


def _to_f64(tree):
    if isinstance(tree, dict):
        return {k: _to_f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


# --- parameter counts, in closed form -------------------------------------------------------

# The paper-scale shapes (docs/model.md; gin/models/pangu_base.gin): the 40k PanGu-α vocabulary,
# a 1024-token context, d_ff = 4·d, and (num_layers counting the query layer, d_model, heads).
PAPER_VOCAB, PAPER_CONTEXT = 40_000, 1024
PAPER_SHAPES = {"pangu_350m": (24, 1024, 16), "pangu_2_6b": (32, 2560, 32),
                "pangu_13b": (40, 5120, 40)}


def param_count_parts(vocab, context, layers, d, d_ff=None, query_layer=True):
    """Parameters of a PanGu-α decoder by part, written from the architecture (pangu.md):

    - word embeddings V·d (the head is tied: no extra matrix), position embeddings S·d, and
      with the query layer its top-query embeddings S·d;
    - per block (the query layer is one of ``layers``): attention Q, K, V, O kernels and
      biases 4d² + 4d; MLP d·d_ff + d_ff + d_ff·d + d; two LayerNorms (scale, bias) 4d;
    - the final LayerNorm 2d.
    """
    d_ff = 4 * d if d_ff is None else d_ff
    return {
        "embeddings": vocab * d + context * d + (context * d if query_layer else 0),
        "attention": layers * (4 * d * d + 4 * d),
        "mlp": layers * (2 * d * d_ff + d_ff + d),
        "layer_norms": layers * 4 * d + 2 * d,
    }


def param_count(vocab, context, layers, d, d_ff=None, query_layer=True):
    return sum(param_count_parts(vocab, context, layers, d, d_ff, query_layer).values())
