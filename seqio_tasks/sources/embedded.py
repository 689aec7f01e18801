"""The embedded default: corpora every machine with Python already has, so demos and tests run
offline on a fresh machine.

- code: the interpreter's standard-library ``.py`` sources (tests and site-packages excluded);
- prose: the interpreter's bundled documentation, i.e. pydoc's topic texts plus the docstrings
  of the same standard-library modules, classes and functions;
- instructions derived from them: code instructions (a function's docstring summary -> the
  function) and text instructions (a docstring's body -> its one-line summary);
- evaluation data derived from validation files: a CoSQA-style query/code matching set and a
  docstring -> function generation set.

Splits are a stable hash of the file's path (5% validation), so a file's code, docstrings and
derived examples all fall in the same split. The content is deterministic for a given Python
version; its identity is ``corpus_fingerprint()``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import os
import sys
import sysconfig
import textwrap
from typing import Iterator

_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                            "idle_test"})
VALIDATION_PERCENT = 5
SPLITS = ("train", "validation")
# Docstrings shorter than this are mostly one-liners with little prose in them.
MIN_PROSE_CHARS = 200
MAX_FUNCTION_LINES = 60


@functools.lru_cache(maxsize=1)
def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def split_of(key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest[:4], "big") % 100 < VALIDATION_PERCENT else (
        "train")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for the embedded corpora; use one of {SPLITS}.")


@functools.lru_cache(maxsize=1)
def stdlib_files() -> tuple[str, ...]:
    """Sorted paths (relative to the stdlib root) of the standard library's Python sources."""
    root = stdlib_root()
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _EXCLUDED_DIRS)
        found += [os.path.relpath(os.path.join(directory, f), root)
                  for f in files if f.endswith(".py")]
    if not found:
        raise FileNotFoundError(f"No Python sources under {root}: this interpreter ships no "
                                "standard-library sources, which the embedded corpora need.")
    return tuple(sorted(found))


@functools.lru_cache(maxsize=None)
def _read(relpath: str) -> str | None:
    """A source file's text, or None if it is not UTF-8 (counted by ``undecodable_files``)."""
    try:
        with open(os.path.join(stdlib_root(), relpath), encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        return None


def undecodable_files() -> list[str]:
    """Sources left out of every corpus because they are not valid UTF-8."""
    return [p for p in stdlib_files() if _read(p) is None]


def code_documents(split: str) -> Iterator[dict[str, str]]:
    """{"text": source, "id": path} for each standard-library file of ``split``."""
    _check_split(split)
    for relpath in stdlib_files():
        text = _read(relpath)
        if text is not None and text.strip() and split_of(relpath) == split:
            yield {"text": text, "id": relpath}


@dataclasses.dataclass(frozen=True)
class Documented:
    """A module, class or function with a docstring, from one standard-library file."""
    path: str
    qualname: str
    kind: str  # "module", "class" or "function"
    docstring: str
    source: str  # the function's source without its docstring, dedented ("" for others)
    # A function split after its docstring, dedented alike: the signature and docstring, and
    # the body that follows ("" for others and for docstring-only functions).
    head: str = ""
    body: str = ""


@functools.lru_cache(maxsize=None)
def _documented_in(relpath: str) -> tuple[Documented, ...]:
    text = _read(relpath)
    if text is None:
        return ()
    try:
        tree = ast.parse(text)  # thread-safe: see seqio_tasks.threadsafe_ast
    except SyntaxError:
        return ()  # a few stdlib files target other Python versions; they still count as code
    found = []
    module_doc = ast.get_docstring(tree)
    if module_doc:
        found.append(Documented(relpath, relpath[:-3].replace(os.sep, "."), "module",
                                module_doc, ""))
    lines = text.splitlines(keepends=True)

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    is_function = not isinstance(child, ast.ClassDef)
                    source = _source_without_docstring(child, lines) if is_function else ""
                    head, body = _split_after_docstring(child, lines) if is_function else ("", "")
                    found.append(Documented(relpath, qualname,
                                            "function" if is_function else "class", doc, source,
                                            head, body))
                visit(child, qualname + ".")

    visit(tree, "")
    return tuple(found)


def prose_documents(split: str) -> Iterator[dict[str, str]]:
    """pydoc topic texts and long standard-library docstrings of ``split``."""
    _check_split(split)
    from pydoc_data.topics import topics  # the interpreter's bundled documentation

    for name in sorted(topics):
        if split_of(f"pydoc-topic:{name}") == split:
            yield {"text": topics[name].strip() + "\n", "id": f"pydoc-topic:{name}"}
    for relpath in stdlib_files():
        if split_of(relpath) != split:
            continue
        for item in _documented_in(relpath):
            if len(item.docstring) >= MIN_PROSE_CHARS:
                yield {"text": item.docstring + "\n", "id": f"{relpath}:{item.qualname}"}


def _summary_and_body(docstring: str) -> tuple[str, str]:
    """Split a docstring into its first paragraph (as one line) and the rest."""
    paragraphs = docstring.strip().split("\n\n", 1)
    summary = " ".join(paragraphs[0].split())
    body = paragraphs[1].strip() if len(paragraphs) > 1 else ""
    return summary, body


def _source_without_docstring(func: ast.AST, lines: list[str]) -> str:
    """The function's source (decorators included) minus its docstring statement, dedented."""
    start = min([d.lineno for d in func.decorator_list] + [func.lineno]) - 1
    doc = func.body[0]
    kept = lines[start:doc.lineno - 1] + lines[doc.end_lineno:func.end_lineno]
    if len(func.body) == 1:  # a docstring-only function still needs a body
        kept.insert(doc.lineno - 1 - start, " " * doc.col_offset + "...\n")
    return textwrap.dedent("".join(kept))


def _split_after_docstring(func: ast.AST, lines: list[str]) -> tuple[str, str]:
    """The function's source (decorators included) cut after its docstring statement, both
    parts dedented by the function's own indent; ("", "") if nothing follows the docstring."""
    start = min([d.lineno for d in func.decorator_list] + [func.lineno]) - 1
    cut = func.body[0].end_lineno
    if len(func.body) == 1 or func.body[1].lineno - 1 < cut:  # no body, or on the same line
        return "", ""
    text = textwrap.dedent("".join(lines[start:func.end_lineno]))
    kept = text.splitlines(keepends=True)
    return "".join(kept[:cut - start]), "".join(kept[cut - start:])


def _functions(split: str) -> Iterator[Documented]:
    for relpath in stdlib_files():
        if split_of(relpath) != split:
            continue
        for item in _documented_in(relpath):
            if item.kind == "function" and item.source.count("\n") <= MAX_FUNCTION_LINES and (
                    not item.qualname.split(".")[-1].startswith("_")):
                yield item


def code_instructions(split: str) -> Iterator[dict[str, str]]:
    """Write-this-function instructions: docstring summary -> the function without docstring."""
    _check_split(split)
    for item in _functions(split):
        summary, _ = _summary_and_body(item.docstring)
        if len(summary) < 20:
            continue
        name = item.qualname.split(".")[-1]
        yield {"instruction": f"Write a Python function `{name}`. {summary}", "input": "",
               "output": item.source, "source": f"embedded:{item.path}:{item.qualname}"}


def code_completions(split: str) -> Iterator[dict[str, str]]:
    """HumanEval-style completions: a function's signature and docstring -> its body. This is
    how a pre-trained (not instruction-tuned) model is asked for code: as the continuation of
    a source file."""
    _check_split(split)
    for item in _functions(split):
        if item.body.strip():
            yield {"id": f"embedded:{item.path}:{item.qualname}", "prompt": item.head,
                   "reference": item.body}


def text_instructions(split: str) -> Iterator[dict[str, str]]:
    """Summarisation instructions: a docstring's body -> its one-line summary."""
    _check_split(split)
    for relpath in stdlib_files():
        if split_of(relpath) != split:
            continue
        for item in _documented_in(relpath):
            summary, body = _summary_and_body(item.docstring)
            if len(body) < MIN_PROSE_CHARS or len(summary) < 20:
                continue
            yield {"instruction": "Summarize the following documentation in one sentence.",
                   "input": body, "output": summary,
                   "source": f"embedded:{relpath}:{item.qualname}"}


def code_qa_pairs(split: str = "validation") -> Iterator[dict]:
    """CoSQA-style records {id, query, code, label}: each function with its own docstring
    summary (label 1) and with the summary of the next function in order (label 0)."""
    _check_split(split)
    items = [(f, _summary_and_body(f.docstring)[0]) for f in _functions(split)]
    items = [(f, s) for f, s in items if len(s) >= 20]
    for i, (item, summary) in enumerate(items):
        code = item.source
        yield {"id": f"{item.path}:{item.qualname}:1", "query": summary, "code": code,
               "label": 1}
        other = items[(i + 1) % len(items)][1]
        if other != summary:
            yield {"id": f"{item.path}:{item.qualname}:0", "query": other, "code": code,
                   "label": 0}


@functools.lru_cache(maxsize=1)
def corpus_fingerprint() -> str:
    """Identity of the embedded corpora on this interpreter (for caches and reports)."""
    h = hashlib.sha256(sys.version.encode())
    for relpath in stdlib_files():
        h.update(relpath.encode())
        h.update(str(os.path.getsize(os.path.join(stdlib_root(), relpath))).encode())
    return h.hexdigest()[:16]
