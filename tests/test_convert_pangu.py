"""convert_pangu: the PyTorch port's state dict -> our Orbax checkpoint, checked against an
independent NumPy transcription of the port's forward pass (pangu.md §1-§3, HF naming)."""

import dataclasses
import importlib.util
import json
import math
import os
import re
import struct
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from codereason_jax import convert_pangu
from codereason_jax.checkpoints import abstract_like, restore_params
from codereason_jax.model import PanGuConfig, PanGuDecoder
from codereason_jax.model.abstract import abstract_params

LAYERS, D, HEADS, VOCAB, SEQ, FF = 3, 32, 4, 64, 16, 128  # 2 ordinary blocks + query layer
SAFETENSORS_DTYPE = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                     np.dtype(ml_dtypes.bfloat16): "BF16"}


def port_state_dict(seed=0):
    """Random weights named as the PyTorch port names them (torch Linear: [out, in])."""
    rng = np.random.default_rng(seed)

    def normal(*shape, std=0.3):
        return (std * rng.standard_normal(shape)).astype(np.float32)

    sd = {"transformer.wte.weight": normal(VOCAB, D), "transformer.wpe.weight": normal(SEQ, D),
          "transformer.wqe.weight": normal(SEQ, D),
          "transformer.ln_f.weight": 1 + normal(D, std=0.1),
          "transformer.ln_f.bias": normal(D, std=0.1)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            sd[p + ln + ".weight"] = 1 + normal(D, std=0.1)
            sd[p + ln + ".bias"] = normal(D, std=0.1)
        for proj in ("q_proj", "k_proj", "v_proj", "c_proj"):
            sd[p + f"attn.{proj}.weight"] = normal(D, D, std=D ** -0.5)
            sd[p + f"attn.{proj}.bias"] = normal(D, std=0.1)
        sd[p + "mlp.c_fc.weight"] = normal(FF, D, std=D ** -0.5)
        sd[p + "mlp.c_fc.bias"] = normal(FF, std=0.1)
        sd[p + "mlp.c_proj.weight"] = normal(D, FF, std=FF ** -0.5)
        sd[p + "mlp.c_proj.bias"] = normal(D, std=0.1)
        # The port's causal-mask buffers are in its state dict too; they are not parameters.
        sd[p + "attn.bias"] = np.tril(np.ones((SEQ, SEQ), np.uint8))[None, None]
    return sd


def write_safetensors(path, tensors, dtype=None):
    """A minimal safetensors writer (header length, JSON header, raw little-endian buffers)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        if dtype is not None and array.dtype.kind == "f":
            array = array.astype(dtype)
        blob = np.ascontiguousarray(array).tobytes()
        code = "U8" if array.dtype == np.uint8 else SAFETENSORS_DTYPE[array.dtype]
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def write_gin(path, scan_layers=False, extra="", vocab_size=VOCAB):
    path.write_text(
        f"PanGuConfig.vocab_size = {vocab_size}\nPanGuConfig.num_layers = {LAYERS}\n"
        f"PanGuConfig.d_model = {D}\nPanGuConfig.num_heads = {HEADS}\n"
        f"PanGuConfig.d_ff = {FF}\nPanGuConfig.max_seq_len = {SEQ}\n"
        f"PanGuConfig.activation = 'gelu_erf'\nPanGuConfig.dropout_rate = 0.0\n"
        f"PanGuConfig.scan_layers = {scan_layers}\n{extra}")
    return str(path)


def config(**overrides):
    return PanGuConfig(**{**dict(vocab_size=VOCAB, num_layers=LAYERS, d_model=D, num_heads=HEADS,
                                 d_ff=FF, max_seq_len=SEQ, activation="gelu_erf",
                                 dropout_rate=0.0), **overrides})


# ---- the port's forward pass, transcribed independently (float64) -----------------------------

def _erf_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def port_logits(sd, tokens, num_heads=HEADS, eps=1e-5):
    """The port: pre-LN GPT-2 blocks with torch Linear y = x W^T + b; ln_f before the last
    block, whose queries are wqe[position]; logits = h wte^T."""
    w = {k: np.asarray(v, np.float64) for k, v in sd.items()}

    def linear(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def layer_norm(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    n = len(tokens)
    positions = np.arange(n)
    h = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][positions]
    query_embeds = w["transformer.wqe.weight"][positions]
    causal = np.tril(np.ones((n, n), bool))
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        last = i == LAYERS - 1
        if last:
            h = layer_norm(h, "transformer.ln_f")
        x = layer_norm(h, p + "ln_1")
        q = linear(query_embeds if last else x, p + "attn.q_proj")
        k, v = linear(x, p + "attn.k_proj"), linear(x, p + "attn.v_proj")
        dh = q.shape[-1] // num_heads
        q, k, v = (t.reshape(n, num_heads, dh).transpose(1, 0, 2) for t in (q, k, v))
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(dh), -1e4)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        a = (probs @ v).transpose(1, 0, 2).reshape(n, num_heads * dh)
        h = h + linear(a, p + "attn.c_proj")
        m = linear(_erf_gelu(linear(layer_norm(h, p + "ln_2"), p + "mlp.c_fc")),
                   p + "mlp.c_proj")
        h = h + m
    return h @ w["transformer.wte.weight"].T


def load(cfg, output):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = nn.meta.unbox(abstract_params(cfg))
    step, params = restore_params(output, abstract_like(abstract, jax.tree.map(
        lambda _: device, abstract)))
    assert step == 0
    return params


def our_logits(cfg, params, tokens):
    return np.asarray(PanGuDecoder(cfg).apply({"params": params}, jnp.asarray([tokens])))[0]


TOKENS = [5, 17, 63, 0, 42, 42, 8, 31, 2, 60, 11, 7]


def assert_port_parity(cfg, params, sd):
    ours = our_logits(cfg, params, TOKENS)
    reference = port_logits(sd, TOKENS)
    assert np.abs(reference).max() > 1.0  # non-trivial logits
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


# ---- tests ------------------------------------------------------------------------------------

def test_safetensors_file_matches_numpy_port(tmp_path, capsys):
    sd = port_state_dict()
    write_safetensors(tmp_path / "model.safetensors", sd)
    out = tmp_path / "converted"
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path / 'model.safetensors'}",
                             f"--output={out}", f"--gin_file={write_gin(tmp_path / 'm.gin')}"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "these weights have 64 ids, not the 40,000 pieces" in captured.out
    assert os.path.isdir(out / "checkpoints" / "0" / "params")
    meta = json.loads((out / "checkpoints" / "0" / "meta" / "metadata").read_text())
    assert meta["source"] == str(tmp_path / "model.safetensors")
    assert meta["model_config"]["num_layers"] == LAYERS and meta["dtype"] == "float32"
    params = load(config(), str(out))
    # The query layer holds h.{L-1}; our kernels are the transposed torch weights.
    np.testing.assert_array_equal(
        params["query_layer"]["mlp"]["wi"]["kernel"], sd["transformer.h.2.mlp.c_fc.weight"].T)
    assert_port_parity(config(), params, sd)


def test_sharded_half_precision_with_scan_layers_matches_numpy_port(tmp_path, capsys):
    sd = port_state_dict(seed=1)
    names = list(sd)
    shards = {"model-00001-of-00002.safetensors": (names[: len(names) // 2], np.float16),
              "model-00002-of-00002.safetensors": (names[len(names) // 2:], ml_dtypes.bfloat16)}
    weight_map, rounded = {}, {}
    for file, (keys, dtype) in shards.items():
        write_safetensors(tmp_path / file, {k: sd[k] for k in keys}, dtype)
        weight_map.update({k: file for k in keys})
        rounded.update({k: sd[k].astype(dtype).astype(np.float32) for k in keys})
    (tmp_path / convert_pangu.SAFETENSORS_INDEX).write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}))
    out = tmp_path / "converted"
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path}", f"--output={out}",
                             f"--gin_file={write_gin(tmp_path / 'm.gin', scan_layers=True)}"])
    assert rc == 0, capsys.readouterr().err
    cfg = config(scan_layers=True)
    params = load(cfg, str(out))
    assert params["blocks"]["attention"]["query"]["kernel"].shape == (LAYERS - 1, D, HEADS,
                                                                      D // HEADS)
    assert_port_parity(cfg, params, rounded)


def test_shape_from_tensors_without_gin_and_bfloat16_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(convert_pangu, "PANGU_VOCAB_SIZE", VOCAB)  # print the PanGu note
    sd = port_state_dict(seed=2)
    sd = {k[len("transformer."):]: v for k, v in sd.items()}  # GPTPanguModel without prefix
    write_safetensors(tmp_path / "weights.safetensors", sd)
    (tmp_path / "config.json").write_text(json.dumps(
        {"num_heads": HEADS, "activation_function": "gelu", "layer_norm_epsilon": 1e-6}))
    out = tmp_path / "converted"
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path}", f"--output={out}",
                             "--dtype=bfloat16"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "PanGuVocabulary" in captured.out and "40,000-piece" in captured.out
    gin_text = (out / "model.gin").read_text()
    bindings = dict(line.split(" = ", 1) for line in gin_text.splitlines()
                    if line.startswith("PanGuConfig."))
    # Every field the weights need: sizes off the tensors (wte rows and columns, wpe rows, the
    # h.{i} count, c_fc rows), heads, activation and epsilon from config.json.
    assert bindings == {
        "PanGuConfig.vocab_size": str(VOCAB), "PanGuConfig.used_vocab_size": "None",
        "PanGuConfig.num_layers": str(LAYERS), "PanGuConfig.d_model": str(D),
        "PanGuConfig.num_heads": str(HEADS), "PanGuConfig.d_ff": str(FF),
        "PanGuConfig.max_seq_len": str(SEQ), "PanGuConfig.activation": "'gelu_erf'",
        "PanGuConfig.layer_norm_epsilon": "1e-06", "PanGuConfig.use_query_layer": "True",
        "PanGuConfig.scan_layers": "False"}
    params = load(config(), str(out))  # restored (cast to float32) from bfloat16
    np.testing.assert_array_equal(
        params["word_embeddings"], sd["wte.weight"].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_mis_shaped_tensor_is_named_with_expected_shape(tmp_path, capsys):
    sd = port_state_dict()
    sd["transformer.h.1.attn.k_proj.weight"] = sd["transformer.h.1.attn.k_proj.weight"][:16]
    write_safetensors(tmp_path / "model.safetensors", sd)
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path / 'model.safetensors'}",
                             f"--output={tmp_path / 'out'}",
                             f"--gin_file={write_gin(tmp_path / 'm.gin')}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert ("transformer.h.1.attn.k_proj.weight has shape (16, 32) in the checkpoint, but "
            "PanGuConfig expects (32, 32) = (d_model, d_model)") in err
    assert not os.path.exists(tmp_path / "out" / "checkpoints")


def test_missing_tensor_and_wrong_config_are_reported(tmp_path, capsys):
    sd = port_state_dict()
    del sd["transformer.h.0.mlp.c_proj.bias"]
    write_safetensors(tmp_path / "model.safetensors", sd)
    args = [f"--hf_checkpoint={tmp_path / 'model.safetensors'}", f"--output={tmp_path / 'out'}"]
    assert convert_pangu.main(args + [f"--gin_file={write_gin(tmp_path / 'm.gin')}"]) == 2
    err = capsys.readouterr().err
    assert "transformer.h.0.mlp.c_proj.bias is missing (expected shape (32,)" in err

    # A gin file for another size: the error says what the tensors are and what to pass.
    wrong = write_gin(tmp_path / "wrong.gin", extra="PanGuConfig.num_layers = 4\n"
                      "PanGuConfig.d_ff = 64\n")
    assert convert_pangu.main(args + [f"--gin_file={wrong}"]) == 2
    err = capsys.readouterr().err
    assert "The tensors say vocab_size=64, d_model=32, d_ff=128, num_layers=3" in err
    assert "--gin.PanGuConfig.num_layers=3" in err and "--gin.PanGuConfig.d_ff=128" in err
    assert re.search(r"transformer\.h\.3\.\S+ is missing", err)  # the 4th layer of the gin


def test_num_heads_conflict_with_config_json_is_an_error(tmp_path, capsys):
    write_safetensors(tmp_path / "model.safetensors", port_state_dict())
    (tmp_path / "config.json").write_text(json.dumps({"num_heads": 8}))
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path}", f"--output={tmp_path / 'out'}",
                             f"--gin_file={write_gin(tmp_path / 'm.gin')}"])
    assert rc == 2
    assert "config.json has num_heads=8, but PanGuConfig.num_heads=4" in capsys.readouterr().err


def test_bin_without_torch_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read without torch")
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path}", f"--output={tmp_path / 'out'}",
                             f"--gin_file={write_gin(tmp_path / 'm.gin')}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "needs torch, which is not installed" in err and ".safetensors" in err


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@pytest.mark.parametrize("legacy", [False, True])
def test_bin_with_torch_matches_numpy_port(tmp_path, capsys, legacy):
    """torch.save's own files, lm_head tied to wte (one storage) as the port saves them: the
    zip format through the torch-free reader, the legacy format through torch."""
    import torch

    sd = port_state_dict(seed=3)
    state = {k: torch.from_numpy(v) for k, v in sd.items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "converted"
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path}", f"--output={out}",
                             f"--gin_file={write_gin(tmp_path / 'm.gin')}"])
    assert rc == 0, capsys.readouterr().err
    assert_port_parity(config(), load(config(), str(out)), sd)


def write_torch_zip(path, tensors, tied=()):
    """A state dict in torch.save's zip layout (torch >= 1.6) without torch: ``archive/data.pkl``
    (protocol 2, tensors as torch._utils._rebuild_tensor_v2 of storages named by persistent
    ids ('storage', torch.FloatStorage, key, 'cpu', numel)) and ``archive/data/<key>`` raw
    little-endian bytes, stored. Names in ``tied`` share the storage of the name they map to,
    as torch saves tied parameters. The tensors are written transposed in storage with
    swapped strides, so that the reader's stride handling is exercised."""
    import collections
    import pickle
    import types
    import zipfile

    torch_module, utils_module = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:  # the class torch pickles as the storage type of a float32 tensor
        pass

    def _rebuild_tensor_v2(*args):  # only its name is written
        raise AssertionError

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_module.FloatStorage, utils_module._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    torch_module._utils = utils_module

    class Storage:
        def __init__(self, key, array):
            self.key, self.array = key, array

    class Tensor:
        def __init__(self, storage, shape, stride):
            self.storage, self.shape, self.stride = storage, shape, stride

        def __reduce_ex__(self, protocol):
            return (_rebuild_tensor_v2, (self.storage, 0, self.shape, self.stride, False,
                                         collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.array.size)
            return None

    storages, state = {}, collections.OrderedDict()
    for i, (name, array) in enumerate(tensors.items()):
        array = np.asarray(array, np.float32)
        if array.ndim == 2:  # column-major storage: the transpose's bytes, strides (1, rows)
            storage = Storage(str(i), np.ascontiguousarray(array.T))
            stride = (1, array.shape[0])
        else:
            storage = Storage(str(i), np.ascontiguousarray(array))
            stride = tuple(int(np.prod(array.shape[k + 1:])) for k in range(array.ndim))
        storages[name] = storage
        state[name] = Tensor(storage, array.shape, stride)
    for name, target in dict(tied).items():
        state[name] = state[target]
    saved = {m: sys.modules.get(m) for m in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch_module, "torch._utils": utils_module})
    try:
        import io
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(state)
    finally:
        for module, value in saved.items():
            if value is None:
                sys.modules.pop(module, None)
            else:
                sys.modules[module] = value
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for storage in storages.values():
            archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())
        archive.writestr("archive/version", "3\n")


def test_bin_in_the_zip_format_needs_no_torch(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    sd = port_state_dict(seed=4)
    write_torch_zip(tmp_path / "pytorch_model.bin", sd,
                    tied={"lm_head.weight": "transformer.wte.weight"})
    out = tmp_path / "converted"
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path}", f"--output={out}",
                             f"--gin_file={write_gin(tmp_path / 'm.gin')}"])
    assert rc == 0, capsys.readouterr().err
    assert_port_parity(config(), load(config(), str(out)), sd)


def test_pickle_with_other_globals_is_refused_unread(tmp_path):
    import pickle
    import zipfile

    with zipfile.ZipFile(tmp_path / "evil.bin", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": os.system}, protocol=2))
    with pytest.raises(convert_pangu.ConversionError, match=r"refers to posix\.system"):
        convert_pangu.open_tensor_file(str(tmp_path / "evil.bin"))


def test_untied_head_is_refused_not_dropped(tmp_path, capsys):
    sd = port_state_dict()
    tied = dict(sd, **{"lm_head.weight": sd["transformer.wte.weight"].copy()})
    write_safetensors(tmp_path / "model.safetensors", tied)
    gin_file = write_gin(tmp_path / "m.gin")
    assert convert_pangu.main([f"--hf_checkpoint={tmp_path / 'model.safetensors'}",
                               f"--output={tmp_path / 'a'}", f"--gin_file={gin_file}"]) == 0
    untied = dict(sd, **{"lm_head.weight": sd["transformer.wte.weight"] + 0.5})
    write_safetensors(tmp_path / "model.safetensors", untied)
    assert convert_pangu.main([f"--hf_checkpoint={tmp_path / 'model.safetensors'}",
                               f"--output={tmp_path / 'b'}", f"--gin_file={gin_file}"]) == 2
    err = capsys.readouterr().err
    assert "lm_head.weight differs from transformer.wte.weight" in err
    assert "untied output head" in err and not (tmp_path / "b" / "checkpoints").exists()


def test_padded_vocabulary_rows_are_kept_and_masked(tmp_path, capsys):
    """The 13B release pads 40,000 pieces to 40,064 rows: recognised, and the padding rows
    never win an argmax nor take probability mass."""
    rows = convert_pangu.PANGU_VOCAB_SIZE + 64
    sd = port_state_dict(seed=5)
    rng = np.random.default_rng(5)
    sd["transformer.wte.weight"] = (0.3 * rng.standard_normal((rows, D))).astype(np.float32)
    sd["transformer.wte.weight"][convert_pangu.PANGU_VOCAB_SIZE:] = 50.0  # large logits
    write_safetensors(tmp_path / "model.safetensors", sd)
    out = tmp_path / "converted"
    # A model gin for the 40,000-piece vocabulary meets the padded table.
    gin_file = write_gin(tmp_path / "m.gin", vocab_size=convert_pangu.PANGU_VOCAB_SIZE)
    rc = convert_pangu.main([f"--hf_checkpoint={tmp_path / 'model.safetensors'}",
                             f"--output={out}", f"--gin_file={gin_file}"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "40064 rows for 40000 tokens; the 64 padding rows are kept and masked" in captured.out
    model_gin = (out / "model.gin").read_text()
    assert "PanGuConfig.vocab_size = 40064" in model_gin
    assert "PanGuConfig.used_vocab_size = 40000" in model_gin
    cfg = PanGuConfig(vocab_size=rows, used_vocab_size=convert_pangu.PANGU_VOCAB_SIZE,
                      num_layers=LAYERS, d_model=D, num_heads=HEADS, d_ff=FF, max_seq_len=SEQ,
                      dropout_rate=0.0, activation="gelu_erf")
    params = load(cfg, str(out))
    tokens = jnp.asarray([[1, 2, 3, 4]])
    logits = PanGuDecoder(cfg).apply({"params": params}, tokens)
    probs = jax.nn.softmax(logits, axis=-1)
    assert float(probs[..., convert_pangu.PANGU_VOCAB_SIZE:].max()) == 0.0
    assert int(jnp.argmax(logits, -1).max()) < convert_pangu.PANGU_VOCAB_SIZE
    unmasked = PanGuDecoder(dataclasses.replace(cfg, used_vocab_size=None)).apply(
        {"params": params}, tokens)
    # Unmasked, the padding rows would take most of the mass somewhere: the mask matters.
    padding_mass = jax.nn.softmax(unmasked, -1)[..., convert_pangu.PANGU_VOCAB_SIZE:].sum(-1)
    assert float(padding_mass.max()) > 0.5


def test_converted_weights_are_never_resumed_into(tmp_path, capsys):
    """A converted directory is a fine-tuning source; used as a run directory it would be
    overwritten by a fresh run, so that is refused with what to do instead."""
    from codereason_jax.checkpoints import CheckpointConfig, CheckpointError, RunCheckpoints

    write_safetensors(tmp_path / "model.safetensors", port_state_dict())
    out = tmp_path / "converted"
    assert convert_pangu.main([f"--hf_checkpoint={tmp_path / 'model.safetensors'}",
                               f"--output={out}",
                               f"--gin_file={write_gin(tmp_path / 'm.gin')}"]) == 0
    abstract = nn.meta.unbox(abstract_params(config()))
    checkpoints = RunCheckpoints(str(out), CheckpointConfig(async_save=False))
    with pytest.raises(CheckpointError, match=r"TrainConfig.init_from"):
        checkpoints.restore_latest(abstract, abstract)
    checkpoints.close()
    assert os.path.isdir(out / "checkpoints" / "0" / "params")
