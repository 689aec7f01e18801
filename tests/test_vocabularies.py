"""Vocabularies: our code SentencePiece, PanGu-α's jieba pipeline, ChatGLM's whitespace pieces, and
the train_vocab CLI. Every model here is trained in the test, on a few hundred kB at most."""

import importlib
import inspect
import io
import os
import pickle
import random
import re

import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf

from codereason_jax import train_vocab
from seqio_tasks import vocabularies as V

TRAIN_MODULES = ["argparse", "textwrap", "json.decoder", "json.encoder", "string", "fnmatch",
                 "dataclasses"]
HELDOUT_MODULES = ["csv", "shlex", "heapq", "calendar", "tokenize"]
PROSE = [
    "Code data helps large language models reason. We pre-train on text and code,\n"
    "then fine-tune on instructions.\n\n" * 3,
    "代码数据能帮助大模型推理。我们在预训练阶段加入代码。\n" * 3,
    "def tabbed():\n\tif True:\n\t\treturn 1\n",
]
CODE_VOCAB_SIZE = 1000
# Strings that stress whitespace: leading/trailing spaces, tabs, blank lines, CRLF.
WHITESPACE_CASES = ["", " ", " lead", "  two leading", "trail  ", "\n", "\n\n\n", "a\r\nb\r\n",
                    "\tx = 1\n\t\ty = 2\n", "if x:\n" + " " * 37 + "pass\n", "x" + " " * 200]


def module_source(name: str) -> str:
    with open(inspect.getsourcefile(importlib.import_module(name)), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def heldout_sources() -> list[str]:
    return [module_source(name) for name in HELDOUT_MODULES]


@pytest.fixture(scope="module")
def train_texts() -> list[str]:
    return [module_source(name) for name in TRAIN_MODULES] + PROSE


@pytest.fixture(scope="module")
def code_model(tmp_path_factory, train_texts) -> str:
    path = str(tmp_path_factory.mktemp("code") / "code.model")
    return V.train_sentencepiece(train_texts, CODE_VOCAB_SIZE, path)


@pytest.fixture(scope="module")
def code_vocab(code_model) -> seqio.SentencePieceVocabulary:
    return V.code_vocabulary(code_model)


# -- our default vocabulary --------------------------------------------------------------------

def test_special_ids_and_required_pieces(code_vocab):
    tok = code_vocab.tokenizer
    assert (code_vocab.pad_id, code_vocab.eos_id, code_vocab.unk_id) == (0, 1, 2)
    assert [tok.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert tok.bos_id() == -1
    assert code_vocab.vocab_size == CODE_VOCAB_SIZE
    assert sum(tok.is_byte(i) for i in range(tok.get_piece_size())) == 256
    for char in ["\n", "\t", "\u2581"]:  # newline, tab and space are pieces, never bytes or unk
        assert tok.id_to_piece(tok.piece_to_id(char)) == char


def test_heldout_stdlib_roundtrips_exactly(code_vocab, heldout_sources):
    texts = heldout_sources + WHITESPACE_CASES
    V.assert_roundtrip(code_vocab, texts)
    V.assert_roundtrip(code_vocab, texts, use_tf=True)
    for text in heldout_sources:
        ids = code_vocab.encode(text)
        assert code_vocab.unk_id not in ids
        assert code_vocab.tokenizer.piece_to_id("<0x0A>") not in ids  # newlines are real pieces
        assert list(code_vocab.encode_tf(tf.constant(text)).numpy()) == ids
    chars = sum(map(len, heldout_sources))
    tokens = sum(len(code_vocab.encode(text)) for text in heldout_sources)
    print(f"characters per token on held-out stdlib code at {CODE_VOCAB_SIZE} pieces: "
          f"{chars / tokens:.3f}")
    assert chars / tokens > 2.2


def test_newline_and_indentation_pieces_are_learned(code_vocab):
    pieces = code_vocab.tokenizer.encode("def f(x):\n    return x\n\n", out_type=str)
    assert "\u2581" * 4 in pieces
    assert any("\n" in piece for piece in pieces)
    assert not any(piece.startswith("<0x") for piece in pieces)


def test_unseen_characters_use_byte_pieces(code_vocab, train_texts):
    seen = set("".join(train_texts))
    for text in ["😀", "龘 dragon", "x = '🐍'\n"]:
        assert not any(char in seen for char in text if ord(char) > 0x3000)
        V.assert_roundtrip(code_vocab, [text])
        V.assert_roundtrip(code_vocab, [text], use_tf=True)
    pieces = [code_vocab.tokenizer.id_to_piece(i) for i in code_vocab.encode("😀")]
    assert pieces == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]


def test_training_is_deterministic(tmp_path, train_texts):
    first = V.train_sentencepiece(train_texts, 600, str(tmp_path / "a.model"))
    second = V.train_sentencepiece(train_texts, 600, str(tmp_path / "b.model"))
    other = V.train_sentencepiece(train_texts[1:], 600, str(tmp_path / "c.model"))
    with open(first, "rb") as a, open(second, "rb") as b, open(other, "rb") as c:
        first_bytes, second_bytes, other_bytes = a.read(), b.read(), c.read()
    assert first_bytes == second_bytes
    assert first_bytes != other_bytes


def test_long_documents_are_chunked_at_line_ends(tmp_path, train_texts):
    text = module_source("argparse")
    chunks = list(V.split_for_training([text, "y" * 700], max_bytes=512))
    assert "".join(chunks) == text + "y" * 700
    assert all(len(chunk.encode("utf-8")) <= 512 for chunk in chunks)
    assert sum(chunk.endswith("\n") for chunk in chunks) >= len(chunks) - 3
    # The line too long for a chunk is cut at the limit; the lines before it are packed: no
    # chunk could have taken the next chunk's first line.
    assert chunks[-2:] == ["y" * 512, "y" * 188]
    for chunk, following in zip(chunks[:-3], chunks[1:-2]):
        first_line = following.splitlines(keepends=True)[0]
        assert len((chunk + first_line).encode("utf-8")) > 512
    # A max_sentence_length far below a file's size still learns newlines (nothing is skipped).
    path = V.train_sentencepiece([text], 500, str(tmp_path / "short.model"),
                                 max_sentence_length=512)
    V.assert_roundtrip(V.code_vocabulary(path), [module_source("csv")])


def test_bad_sizes_and_empty_input_raise_value_errors(tmp_path, train_texts):
    path = str(tmp_path / "x.model")
    with pytest.raises(ValueError, match=f"minimum is {V.MIN_VOCAB_SIZE}"):
        V.train_sentencepiece(train_texts, 200, path)
    with pytest.raises(ValueError, match=r"too small for these texts: the minimum is \d+"):
        V.train_sentencepiece(train_texts, V.MIN_VOCAB_SIZE, path)
    with pytest.raises(ValueError, match=r"at most \d+ pieces"):
        V.train_sentencepiece(["tiny text\n"], 5000, path)
    for empty in ([], ["", ""]):
        with pytest.raises(ValueError, match="no training text"):
            V.train_sentencepiece(empty, 1000, path)
    assert not os.path.exists(path)


def test_assert_roundtrip_names_the_first_difference():
    class DropsTabs(seqio.PassThroughVocabulary):
        def _encode(self, s):
            return [ord(c) for c in s if c != "\t"]

        def _decode(self, ids):
            return "".join(map(chr, ids))

    with pytest.raises(V.RoundTripError, match=r"text #1: .* character 3: expected '\\t', got 'd'"):
        V.assert_roundtrip(DropsTabs(1000), ["fine", "abc\tdef"])


def test_vocab_file_escapes_whitespace_pieces(tmp_path, code_model, code_vocab):
    vocab_file = tmp_path / "code.vocab"
    V.write_vocab_file(code_model, str(vocab_file))
    lines = vocab_file.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == code_vocab.vocab_size
    assert lines[0].startswith("<pad>\t")
    assert any(line.startswith("\\n\t") for line in lines)
    # Every line is piece<TAB>score, the piece with \\, \n, \r and \t written as escapes.
    tok = code_vocab.tokenizer
    unescape = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    for i, line in enumerate(lines):
        text, score = line.rsplit("\t", 1)
        assert "\t" not in text and "\r" not in text, line
        assert re.sub(r"\\(.)", lambda m: unescape[m.group(1)], text) == tok.id_to_piece(i)
        assert float(score) == pytest.approx(tok.get_score(i), rel=1e-5, abs=1e-6)
    assert lines[tok.piece_to_id("\t")].startswith("\\t\t")  # the tab piece, escaped


# -- PanGu-α ------------------------------------------------------------------------------------

PANGU_TEXTS = [
    "我们今天去北京大学学习自然语言处理。",
    "Hello world, this is PanGu.\nIt has two lines.",
    "代码数据能帮助大模型推理吗。我们  在 预训练阶段加入代码。",
    "def add(a, b):\n    return a + b\n",
    "深度学习模型需要大量的数据和计算资源。\n\n",
    " The quick brown fox jumps over the lazy dog 42 times. ",
]
PANGU_SPECIALS = ["\u2583", "\u2582", "<sep>", "<pad>", "<mask>", "<eod>", "<eot>"]


@pytest.fixture(scope="module")
def pangu_vocab(tmp_path_factory) -> V.PanGuVocabulary:
    """A tiny unigram model with the real one's settings, ids 0-9 and jieba-segmented input."""
    path = str(tmp_path_factory.mktemp("pangu") / "pangu.model")
    segmenter = V.PanGuVocabulary(path)  # preprocess needs no model file
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([segmenter.preprocess(t) for t in PANGU_TEXTS] * 3),
        model_writer=model, model_type="unigram", vocab_size=200, hard_vocab_limit=False,
        user_defined_symbols=PANGU_SPECIALS, normalization_rule_name="nmt_nfkc",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, num_threads=1,
        minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return V.PanGuVocabulary(path)


def test_pangu_ids_follow_the_released_layout(pangu_vocab):
    assert (pangu_vocab.eod_id, pangu_vocab.eos_id, pangu_vocab.pad_id) == (9, 9, 6)
    assert pangu_vocab.unk_id == 0
    ids = pangu_vocab.encode("我们 学习\n")
    assert 4 in ids and 3 in ids  # "▂" for the space, "▃" for the newline


def test_pangu_roundtrips_spaces_newlines_and_chinese(pangu_vocab):
    texts = PANGU_TEXTS + ["我们  学习\n\n  代码 ", "北京\n大学"]
    V.assert_roundtrip(pangu_vocab, texts)
    V.assert_roundtrip(pangu_vocab, texts, use_tf=True)
    ragged = pangu_vocab.encode_tf(tf.constant(texts[:2]))
    assert ragged.to_list() == [pangu_vocab.encode(t) for t in texts[:2]]
    decoded = pangu_vocab.decode_tf(ragged).numpy().tolist()
    assert [d.decode("utf-8") for d in decoded] == texts[:2]
    # Decoding stops at EOD and drops padding.
    ids = pangu_vocab.encode(texts[0])
    assert pangu_vocab.decode(ids + [pangu_vocab.eod_id] + ids) == texts[0]
    assert pangu_vocab.decode([pangu_vocab.pad_id] + ids) == texts[0]


def test_pangu_is_lossy_where_the_real_tokenizer_is(pangu_vocab):
    # nmt_nfkc turns tabs into spaces (then deleted) and full-width punctuation into ASCII.
    assert pangu_vocab.decode(pangu_vocab.encode("a\tb，c")) == "ab,c"


def test_pangu_missing_pieces_and_identity(pangu_vocab, code_model):
    with pytest.raises(ValueError, match="no piece '<eot>'"):
        _ = V.PanGuVocabulary(code_model).eod_id
    copy = pickle.loads(pickle.dumps(pangu_vocab))
    assert copy == pangu_vocab and hash(copy) == hash(pangu_vocab)
    assert copy.decode(copy.encode(PANGU_TEXTS[0])) == PANGU_TEXTS[0]


# -- ChatGLM-style ------------------------------------------------------------------------------

def chatglm_reference(text: str) -> str:
    """ChatGLM-6B's own order of replacements, as its tokenizer documents it."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for k in range(80, 1, -1):
        text = text.replace(" " * k, f"<|blank_{k}|>")
    return text


@pytest.fixture(scope="module")
def chatglm_vocab(tmp_path_factory, train_texts) -> V.ChatGLMStyleVocabulary:
    path = str(tmp_path_factory.mktemp("chatglm") / "chatglm.model")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([V.chatglm_encode_whitespace(t) for t in train_texts[:4]]),
        model_writer=model, model_type="bpe", vocab_size=700,
        user_defined_symbols=["<pad>", "<eop>"] + V.chatglm_whitespace_pieces(),
        normalization_rule_name="identity", remove_extra_whitespaces=False, byte_fallback=True,
        max_sentence_length=1 << 20, num_threads=1, minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    vocab = V.ChatGLMStyleVocabulary(path)
    vocab.check_pieces()
    return vocab


def test_chatglm_whitespace_substitution_matches_chatglm():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice(["a", "b", " ", " ", "\n", "\t", " " * rng.randint(2, 200)])
                       for _ in range(rng.randint(0, 12)))
        expected = chatglm_reference(text)
        assert V.chatglm_encode_whitespace(text) == expected
        assert V.ChatGLMStyleVocabulary.preprocess_tf(tf.constant(text)).numpy().decode() == (
            expected)
        assert V.chatglm_decode_whitespace(expected) == text


def test_chatglm_ids_by_piece_name(chatglm_vocab):
    assert chatglm_vocab.eos_id == chatglm_vocab.piece_id("<eop>")
    assert chatglm_vocab.pad_id == chatglm_vocab.piece_id("<pad>")
    assert chatglm_vocab.eos_id != chatglm_vocab.pad_id
    with pytest.raises(ValueError, match="no piece '<eos>'"):
        _ = V.ChatGLMStyleVocabulary(chatglm_vocab.model_path, eos_piece="<eos>").eos_id
    blank_85 = chatglm_vocab.encode("x" + " " * 85 + "y")
    assert chatglm_vocab.piece_id("<|blank_80|>") in blank_85
    assert chatglm_vocab.piece_id("<|blank_5|>") in blank_85


def test_chatglm_roundtrips_python_code(chatglm_vocab, heldout_sources):
    texts = heldout_sources[:2] + WHITESPACE_CASES + ["a" + " " * 161 + "b\n\t\t  c"]
    V.assert_roundtrip(chatglm_vocab, texts)
    V.assert_roundtrip(chatglm_vocab, texts, use_tf=True)
    batch = tf.constant(texts[2:6])
    ragged = chatglm_vocab.encode_tf(batch)
    assert ragged.to_list() == [chatglm_vocab.encode(t) for t in texts[2:6]]
    assert [t.decode() for t in chatglm_vocab.decode_tf(ragged).numpy()] == texts[2:6]


def test_chatglm_tf_decode_matches_python_on_any_ids(chatglm_vocab):
    space = chatglm_vocab.processor.piece_to_id("\u2581")
    word = chatglm_vocab.encode("return")[-1]
    eos, pad = chatglm_vocab.eos_id, chatglm_vocab.pad_id
    for ids in ([space, space, word], [1, space, word], [pad, space, word], [word, space],
                [], [eos, word], [space, 10**6], [space, word, eos, word]):
        expected = chatglm_vocab.decode(ids)
        got = chatglm_vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode()
        assert got == expected, ids


# -- the train_vocab CLI ------------------------------------------------------------------------

def write_corpus(directory) -> None:
    directory.mkdir()
    (directory / "pkg").mkdir()
    for i, name in enumerate(["textwrap", "string", "fnmatch", "json.decoder"]):
        (directory / "pkg" / f"m{i}.py").write_text(module_source(name), encoding="utf-8")
    (directory / "notes.txt").write_text(PROSE[0] + PROSE[1], encoding="utf-8")
    (directory / "ignored.md").write_text("not read", encoding="utf-8")


def test_cli_trains_from_a_directory(tmp_path, capsys):
    write_corpus(tmp_path / "corpus")
    output = tmp_path / "out" / "v.model"
    code = train_vocab.main([f"--output={output}", "--vocab_size=700",
                             f"--text_dir={tmp_path / 'corpus'}", "--heldout_every=2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert output.exists() and (tmp_path / "out" / "v.vocab").exists()
    assert "round-trip: exact on 2 held-out documents (python and TF)" in out
    ratio = float(out.split("characters per token on held-out text: ")[1].split()[0])
    assert ratio > 1.5
    vocab = V.code_vocabulary(str(output))
    assert vocab.vocab_size == 700 and vocab.eos_id == 1


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    write_corpus(tmp_path / "corpus")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--text_dir=" + str(tmp_path / "empty")], "holds no .txt/.py files"),
        (["--text_dir=" + str(tmp_path / "corpus"), "--vocab_size=100"], "minimum is"),
        (["--task=no_such_task"], "unknown task 'no_such_task'"),
        (["--mixture=no_such_mixture"], "unknown mixture 'no_such_mixture'"),
    ]
    for args, message in cases:
        if not any(a.startswith("--vocab_size") for a in args):
            args = args + ["--vocab_size=500"]
        code = train_vocab.main([f"--output={tmp_path / 'x.model'}", *args])
        assert code == 2, args
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.model").exists()


@pytest.fixture
def registered_tasks():
    """Two tiny seqio tasks over in-memory text and a 3:1 mixture; removed afterwards."""
    def dataset_fn(texts):
        return lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices(
            {"text": texts, "id": list(range(len(texts)))})

    features = {"targets": seqio.Feature(seqio.PassThroughVocabulary(1))}
    sources = {"vocab_test_code": [module_source(n) for n in ("textwrap", "string", "fnmatch")],
               "vocab_test_prose": PROSE * 4}
    for name, texts in sources.items():
        seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(
            dataset_fn(texts), splits=["train"]), output_features=features)
    seqio.MixtureRegistry.add("vocab_test_mix", [("vocab_test_code", 3.0),
                                                 ("vocab_test_prose", 1.0)])
    try:
        yield sources
    finally:
        seqio.MixtureRegistry.remove("vocab_test_mix")
        for name in sources:
            seqio.TaskRegistry.remove(name)


def test_cli_trains_from_a_registered_task(tmp_path, capsys, registered_tasks):
    output = tmp_path / "task.model"
    code = train_vocab.main([f"--output={output}", "--vocab_size=600", "--task=vocab_test_code",
                             "--heldout_every=3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "round-trip: exact on 1 held-out documents" in captured.out
    code = train_vocab.main([f"--output={tmp_path / 'bad.model'}", "--vocab_size=600",
                             "--task=vocab_test_code", "--text_field=targets"])
    assert code == 2
    assert "has no field 'targets'" in capsys.readouterr().err


def test_mixture_budget_follows_mixing_rates(registered_tasks):
    sources = train_vocab.seqio_sources(None, "vocab_test_mix", "text", 4000)
    budgets = {s.name: s.max_characters for s in sources}
    assert budgets == {"vocab_test_code": 3000, "vocab_test_prose": 1000}
    documents = train_vocab.collect_documents(sources)
    assert documents[0] == registered_tasks["vocab_test_code"][0][:3000]
    assert sum(map(len, documents[1:])) == 1000  # prose, cut at its budget


# -- vocabulary specs ----------------------------------------------------------------------------

def test_embedded_size_spec_trains_once_and_names_bad_specs(monkeypatch, tmp_path, train_texts):
    from seqio_tasks import default_vocabulary as D

    monkeypatch.setenv("CODEREASON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(D, "_EMBEDDED", {})
    calls = []

    def train_small(vocab_size):  # the corpus is small here; the flow is the real one
        calls.append(vocab_size)
        path = D.default_model_path(vocab_size)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            V.train_sentencepiece(train_texts, vocab_size, path)
        return path

    monkeypatch.setattr(D, "ensure_default_model", train_small)
    vocab = D.task_vocabulary("embedded:600")
    assert vocab is D.task_vocabulary("embedded:600")  # one object per size
    for text in ("def f(x):\n    return x\n", "Code helps.", "    pass\n"):
        assert vocab.decode(vocab.encode(text)) == text
    assert vocab.vocab_size == 600
    assert calls == [600]  # the model file is checked once, not on every encode and decode
    for spec, message in (("embedded:abc", "must be an integer in"),
                          ("embedded:100", "must be an integer in"),
                          ("wordpiece:x", "'embedded:SIZE' or KIND:PATH")):
        with pytest.raises(ValueError, match=message):
            D.task_vocabulary(spec)
