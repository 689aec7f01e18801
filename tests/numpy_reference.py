"""An independent float64 numpy forward pass of PanGu-α, written from pangu.md's equations.

Used to check the Flax model's layer math (LN placement, the query layer's inputs, residuals,
tied head) rather than only its self-consistency.
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


def _block(h, p, mask, cfg, query_inputs=None):
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
    a = _proj(np.einsum("hts,shd->thd", probs, v), att["output"], 2)
    u = h + a
    m = _proj(_fast_gelu(_proj(_layer_norm(u, p["ln_2"], cfg.layer_norm_epsilon),
                               p["mlp"]["wi"], 1)), p["mlp"]["wo"], 1)
    return u + m


def forward(params, cfg, tokens, positions, segment_ids):
    """Logits [T, V] for one row (float64); params as returned by model.init (unboxed)."""
    params = _to_f64(params)
    t = len(tokens)
    idx = np.arange(t)
    mask = (idx[None, :] <= idx[:, None]) & (segment_ids[:, None] == segment_ids[None, :])
    word = params["word_embeddings"]
    h = word[tokens] + params["position_embeddings"][positions]
    for i in range(cfg.num_ordinary_layers):
        h = _block(h, params[f"block_{i}"], mask, cfg)
    g = _layer_norm(h, params["ln_f"], cfg.layer_norm_epsilon)
    if cfg.use_query_layer:
        g = _block(g, params["query_layer"], mask, cfg,
                   query_inputs=params["top_query_embeddings"][positions])
    return g @ word.T


def _to_f64(tree):
    if isinstance(tree, dict):
        return {k: _to_f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)
