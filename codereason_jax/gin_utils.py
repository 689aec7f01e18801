"""Gin at the boundary: T5X-style flags, strict parsing, and the configurables we expose.

Command lines take ``--gin_file=F`` (repeatable; later files may override earlier ones only
where they say so) and ``--gin.NAME=VALUE`` bindings. Gin itself rejects unknown configurables
and parameter names when parsing; missing required values are reported here by name.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tokenize
from typing import Sequence

import gin

from codereason_jax.checkpoints import CheckpointConfig
from codereason_jax.model.config import ConfigError, PanGuConfig
from codereason_jax.optim import OptimizerConfig

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The plain dataclasses stay free of gin; gin sees configurables of the same names.
_CONFIGURABLES = {cls: gin.external_configurable(cls, name=cls.__name__)
                  for cls in (PanGuConfig, OptimizerConfig, CheckpointConfig)}


def register(cls: type) -> None:
    """Expose another plain dataclass to gin under its own name."""
    if cls not in _CONFIGURABLES:
        # Gin locks its registry at the first parse; a module imported later (an entry point
        # run in-process, a test) may still register its configurable.
        with gin.unlock_config():
            _CONFIGURABLES[cls] = gin.external_configurable(cls, name=cls.__name__)

# The cells of the experiment matrix (gin/data/*.gin) over a set of corpora
# (seqio_tasks.mixtures.register_matrix): "paper" (the real corpora read from their files),
# "paper_tfds" (the same, prepared once by seqio_tasks.tfds_builders) or "embedded" (offline).
MATRIX_CELLS = ("pretrain_nl", "pretrain_code", "pretrain_uniform", "pretrain_stepwise_increase",
                "pretrain_stepwise_decrease", "sft_text", "sft_text_code", "sft_uniform",
                "sft_stepwise_increase", "sft_stepwise_decrease")
MATRIX_CORPORA = ("paper", "paper_tfds", "embedded")


@gin.configurable
def matrix_mixture(cell: str = gin.REQUIRED, corpora: str = "paper") -> str:
    """The registered mixture name of a matrix cell's data over a set of corpora.

    Data gin files name the cell; one binding (``matrix_mixture.corpora``) moves every cell
    between the real corpora and the embedded default without another copy of the files.
    """
    if cell not in MATRIX_CELLS:
        raise ConfigError(f"matrix_mixture.cell={cell!r} is not one of {MATRIX_CELLS}.")
    if corpora not in MATRIX_CORPORA:
        raise ConfigError(f"matrix_mixture.corpora={corpora!r} is not one of {MATRIX_CORPORA}.")
    return f"{cell}_{corpora}"


# `include 'gin/...'` lines work from any working directory.
gin.add_config_file_search_path(PROJECT_ROOT)

_BINDING = re.compile(r"^--gin\.([A-Za-z_][\w.]*(?:/[\w.]+)?)=(.*)$", re.S)


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                        help="gin file to parse (repeatable, applied in order)")


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--gin.NAME=VALUE`` flags (as gin bindings) from the other arguments."""
    rest, bindings = [], []
    for arg in argv:
        match = _BINDING.match(arg)
        if match:
            bindings.append(f"{match.group(1)} = {match.group(2)}")
        elif arg.startswith("--gin."):
            raise ConfigError(f"Malformed gin flag {arg!r}; write --gin.NAME=VALUE, e.g. "
                              "--gin.PanGuConfig.dropout_rate=0.0")
        else:
            rest.append(arg)
    return rest, bindings


def parse(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> None:
    """Parse gin files and bindings; `include` paths resolve from the project root too."""
    if not gin_files:
        raise ConfigError("No --gin_file given; pass e.g. --gin_file=gin/models/pangu_tiny.gin")
    for path in gin_files:
        if not os.path.exists(path) and not os.path.exists(os.path.join(PROJECT_ROOT, path)):
            raise ConfigError(f"gin file {path!r} does not exist (looked in the current "
                              f"directory and in {PROJECT_ROOT}).")
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(bindings))
    except (ValueError, SyntaxError, TypeError, KeyError, AttributeError, ImportError,
            tokenize.TokenError) as err:
        # Gin's messages name the file, line and binding; the type is gin's own business.
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(_gin_message(err)).with_traceback(err.__traceback__) from None


_GIN_LOCATION = re.compile(r'^\s*In (?:file "(?P<file>[^"]*)", line (?P<line>\d+)|bindings string'
                          r'(?P<bindings>))', re.M)


def _gin_message(err: BaseException) -> str:
    """``FILE:LINE: message (the line)`` from gin's exception, whose text appends the place."""
    if isinstance(err, tokenize.TokenError):
        return f"gin: {err.args[0]}: an unclosed bracket or quote in a gin file or --gin flag"
    if isinstance(err, SyntaxError):
        place = f"{err.filename}:{err.lineno}: " if err.filename else ""
        text = f" ({err.text.strip()})" if err.text and err.text.strip() else ""
        return f"gin: {place}{err.msg}{text}"
    text = str(err).strip("'\"")
    match = _GIN_LOCATION.search(text)
    if not match:
        return f"gin: {text}"
    message = text[:match.start()].strip()
    rest = [line.strip() for line in text[match.end():].splitlines() if line.strip()]
    place = (f"{match['file']}:{match['line']}: " if match["file"] is not None
             else "--gin flag: ")
    return f"gin: {place}{message}" + (f" ({rest[0]})" if rest else "")


def build(cls: type):
    """Instantiate a registered dataclass from its gin bindings, naming any unbound field."""
    register(cls)
    try:
        bound = _CONFIGURABLES[cls]()
    except TypeError as err:
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = list(dict.fromkeys(
            name for name in re.findall(r"'(\w+)'", str(err)) if name in fields))
        if "missing" not in str(err) or not missing:
            raise
        name = cls.__name__
        raise ConfigError(
            f"{name} is missing required values: " + ", ".join(missing) + ". Bind them in a gin "
            f"file (e.g. `{name}.{missing[0]} = ...`) or on the command line "
            f"(--gin.{name}.{missing[0]}=...).") from None
    return cls(**{f.name: getattr(bound, f.name) for f in dataclasses.fields(bound)})


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]
                       ) -> argparse.Namespace:
    """Parse an entry point's flags (``--gin_file`` included) and its gin files and bindings.

    Raises ConfigError or gin's ValueError, whose messages name the offending binding."""
    add_gin_flags(parser)
    rest, bindings = split_gin_bindings(argv)
    args = parser.parse_args(rest)
    parse(args.gin_file, bindings)
    return args


def model_config() -> PanGuConfig:
    """The PanGuConfig bound in gin."""
    return build(PanGuConfig)
