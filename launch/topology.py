"""Cloud TPU slice types: chips, hosts and JAX devices, and a check of a run's mesh against them.

One JAX device per chip on every generation listed here: v4 and v5p chips have two TensorCores
that JAX drives as one device ("megacore"); v5e and v6e chips have one TensorCore. The number in
a v4/v5p accelerator type counts TensorCores (v4-32 = 16 chips), the number in a v5e/v6e type
counts chips (v5litepod-16 = 16 chips). Multi-host slices have 4 chips per host; v5e and v6e
slices of up to 8 chips are one host (sources: Cloud TPU system-architecture pages; the
``system_characteristics`` table of Google's xpk launcher).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tokenize
from types import ModuleType
from typing import Any, Iterable, Mapping, Sequence


class LaunchError(ValueError):
    """Invalid launch input; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Generation:
    name: str
    cores_per_chip: int       # the number in "v4-32" counts cores for v4/v5p, chips for v5e/v6e
    hbm_gb_per_chip: int      # vendor figure (GB); the budget for `aot_check --hbm_gib`
    runtime_version: str      # default --version / --runtime-version
    sizes: tuple[int, ...]    # the numbers that follow the prefix
    single_host_max_chips: int = 4  # slices of up to this many chips are one host
    chips_per_host: int = 4   # in multi-host slices


GENERATIONS = {
    "v4": Generation("v4", 2, 32, "tpu-ubuntu2204-base",
                     (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)),
    "v5litepod": Generation("v5litepod", 1, 16, "v2-alpha-tpuv5-lite",
                            (1, 4, 8, 16, 32, 64, 128, 256), single_host_max_chips=8),
    "v5p": Generation("v5p", 2, 95, "v2-alpha-tpuv5",
                      (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 6144, 12288)),
    "v6e": Generation("v6e", 1, 32, "v2-alpha-tpuv6e",
                      (1, 4, 8, 16, 32, 64, 128, 256), single_host_max_chips=8),
}


@dataclasses.dataclass(frozen=True)
class TpuType:
    accelerator_type: str
    generation: Generation
    chips: int
    hosts: int

    @property
    def devices(self) -> int:
        """JAX devices in the slice (jax.device_count() on every host): one per chip."""
        return self.chips

    @property
    def devices_per_host(self) -> int:
        return self.chips // self.hosts

    @property
    def runtime_version(self) -> str:
        return self.generation.runtime_version

    def describe(self) -> str:
        return (f"{self.accelerator_type}: {self.chips} chips = {self.devices} JAX devices, "
                f"{self.hosts} host(s) x {self.devices_per_host} devices, "
                f"{self.generation.hbm_gb_per_chip} GB HBM per chip")


def _build_table() -> dict[str, TpuType]:
    table = {}
    for gen in GENERATIONS.values():
        for size in gen.sizes:
            chips = size // gen.cores_per_chip
            hosts = 1 if chips <= gen.single_host_max_chips else chips // gen.chips_per_host
            name = f"{gen.name}-{size}"
            table[name] = TpuType(name, gen, chips, hosts)
    return table


TPU_TYPES: dict[str, TpuType] = _build_table()
_ALIASES = {"v5e": "v5litepod"}


def tpu_type(accelerator_type: str) -> TpuType:
    """The table entry of an accelerator type, or a LaunchError naming the known ones."""
    if accelerator_type in TPU_TYPES:
        return TPU_TYPES[accelerator_type]
    prefix, _, size = accelerator_type.partition("-")
    hint = ""
    if prefix in _ALIASES and f"{_ALIASES[prefix]}-{size}" in TPU_TYPES:
        hint = f" Did you mean {_ALIASES[prefix]}-{size}? (gcloud names v5e slices v5litepod-N.)"
    elif prefix in GENERATIONS:
        gen = GENERATIONS[prefix]
        hint = (f" {prefix} sizes: {', '.join(f'{prefix}-{s}' for s in gen.sizes)}.")
    known = ", ".join(sorted(GENERATIONS))
    raise LaunchError(f"Unknown accelerator type {accelerator_type!r}.{hint} Known generations: "
                      f"{known} (e.g. v4-32, v5litepod-16, v5p-64, v6e-16).")


# ------------------------------------------------------------------- the run's mesh in gin


@dataclasses.dataclass(frozen=True)
class MacroRef:
    """``%NAME`` in a gin value; ``_literal`` follows it through the bindings."""
    name: str

    def __repr__(self) -> str:
        return f"%{self.name}"


@dataclasses.dataclass(frozen=True)
class ConfigurableRef:
    """``@name`` or ``@name()`` in a gin value: not a literal, so the checks cannot use it."""
    name: str
    evaluate: bool

    def __repr__(self) -> str:
        return f"@{self.name}{'()' if self.evaluate else ''}"


class _References:
    """gin's parser delegate: references are kept as markers, nothing is looked up or called."""

    def configurable_reference(self, scoped_name: str, evaluate: bool) -> ConfigurableRef:
        return ConfigurableRef(scoped_name, evaluate)

    def macro(self, scoped_name: str) -> MacroRef:
        return MacroRef(scoped_name)


def _gin_parser() -> ModuleType:
    """gin's own parser module. The rest of launch/ needs only the standard library, so gin is
    imported here, when a run's gin files are read, and its absence is a clear error."""
    try:
        from gin import config_parser
    except ImportError as err:
        raise LaunchError(
            f"reading the run's gin files needs gin-config ({err}); install it with "
            "`pip install gin-config` (or the repository's requirements) and run again.") from None
    return config_parser


def _parse_gin(text: str, source: str) -> list[Any]:
    """The statements of gin text, parsed by gin; a syntax error names ``source`` and line."""
    config_parser = _gin_parser()
    try:
        return list(config_parser.ConfigParser(text, _References()))
    except SyntaxError as err:  # gin's own errors, and the tokenizer's IndentationError
        line = f"{source}:{err.lineno}" if err.lineno else source
        shown = f" ({err.text.strip()})" if isinstance(err.text, str) and err.text.strip() else ""
        raise LaunchError(f"{line}: gin syntax error: {err.msg}{shown}") from None
    except tokenize.TokenError as err:  # the text ends inside a bracket or a string
        place = err.args[1] if len(err.args) > 1 else None
        line = f"{source}:{place[0]}" if isinstance(place, tuple) and place else source
        raise LaunchError(f"{line}: gin syntax error: {err.args[0]} (an unclosed bracket or "
                          "quote)") from None
    except ValueError as err:  # e.g. a macro reference such as %NAME.value
        raise LaunchError(f"{source}: gin syntax error: {err}") from None


def resolve_gin_path(path: str, root: str) -> str:
    """A gin file as the train command resolves it: as given, else under the project root."""
    for candidate in (path, os.path.join(root, path)):
        if os.path.isfile(candidate):
            return candidate
    raise LaunchError(f"gin file {path!r} not found (looked in the current directory and in "
                      f"{root}).")


def _binding_key(statement: Any) -> str:
    """``scope/Configurable.param`` of a binding, ``scope/NAME`` of a macro (as written)."""
    name = f"{statement.selector}.{statement.arg_name}" if statement.arg_name \
        else statement.selector
    return f"{statement.scope}/{name}" if statement.scope else name


def gin_bindings(gin_files: Sequence[str], bindings: Sequence[str], root: str
                 ) -> dict[str, Any]:
    """{"Configurable.param" or "MACRO": value} after the files (includes followed) and the
    ``NAME = VALUE`` bindings, last one winning, in the order of their last assignment.

    Parsed by gin's own parser, so values are Python literals, with ``MacroRef`` and
    ``ConfigurableRef`` markers for ``%NAME`` and ``@name``; nothing is imported or evaluated,
    so no configurable needs registering. A file that cannot be read or parsed is a LaunchError
    naming it: a misread file must not become a wrong mesh.
    """
    values: dict[str, Any] = {}

    def apply(statements: Iterable, source: str, seen: tuple[str, ...]) -> None:
        config_parser = _gin_parser()
        for statement in statements:
            if isinstance(statement, config_parser.IncludeStatement):
                try:
                    read(statement.filename, seen)
                except LaunchError as err:
                    where = f"{source}:{statement.location.line_num}"
                    raise LaunchError(f"{where}: include {statement.filename!r}: {err}") from None
            elif isinstance(statement, config_parser.BindingStatement):
                key = _binding_key(statement)
                values.pop(key, None)  # keep the order of last assignment
                values[key] = statement.value
            # import statements and block declarations bind nothing the checks read

    def read(path: str, seen: tuple[str, ...]) -> None:
        resolved = os.path.abspath(resolve_gin_path(path, root))
        if resolved in seen:
            raise LaunchError(f"gin include cycle through {path}")
        try:
            with open(resolved, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise LaunchError(f"cannot read gin file {path}: {err}") from None
        apply(_parse_gin(text, path), path, seen + (resolved,))

    for path in gin_files:
        read(path, ())
    for text in bindings:
        apply(_parse_gin(text, f"gin binding {text!r}"), "gin binding", ())
    return values


_NOT_LITERAL = object()


def _resolve(value: Any, values: Mapping[str, Any], depth: int) -> Any:
    """``value`` with its macros replaced, as gin would; ``_NOT_LITERAL`` if one cannot be."""
    if isinstance(value, MacroRef):
        if depth >= 10 or value.name not in values:  # unbound, or a cycle
            return _NOT_LITERAL
        return _resolve(values[value.name], values, depth + 1)
    if isinstance(value, ConfigurableRef):
        return _NOT_LITERAL
    if isinstance(value, (tuple, list)):
        items = [_resolve(item, values, depth) for item in value]
        return _NOT_LITERAL if any(i is _NOT_LITERAL for i in items) else type(value)(items)
    if isinstance(value, dict):
        pairs = [(_resolve(k, values, depth), _resolve(v, values, depth))
                 for k, v in value.items()]
        return _NOT_LITERAL if any(_NOT_LITERAL in pair for pair in pairs) else dict(pairs)
    return value


def _literal(value: Any, values: Mapping[str, Any] | None = None) -> Any:
    """The Python value of a binding, ``%MACRO`` references (also inside containers) followed
    through ``values``; None when it is not a literal (``@configurable()``, an unbound macro)."""
    resolved = _resolve(value, values or {}, 0)
    return None if resolved is _NOT_LITERAL else resolved


def _bound(values: Mapping[str, Any], configurable: str, param: str, default: Any = None
           ) -> Any:
    """The last unscoped binding of ``configurable.param``, as gin matches it: by name or by a
    module-qualified name (``codereason_jax.trainer.TrainConfig.mesh_shape``)."""
    for key in reversed(list(values)):
        selector, _, name = key.rpartition(".")
        if name == param and "/" not in key and (
                selector == configurable or selector.endswith("." + configurable)):
            return values[key]
    return default


def check_run_fits_slice(tpu: TpuType, values: Mapping[str, Any]) -> list[str]:
    """Check TrainConfig.mesh_shape (data x fsdp x model must use every device) and the batch
    split; returns lines describing the plan, raises LaunchError when the run cannot start."""
    shape = _literal(_bound(values, "TrainConfig", "mesh_shape", (-1, 1, 1)), values)
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
            or not all(isinstance(s, int) for s in shape) or list(shape).count(-1) > 1
            or any(s == 0 or s < -1 for s in shape)):
        written = _bound(values, "TrainConfig", "mesh_shape")
        raise LaunchError(f"TrainConfig.mesh_shape = {written!r} must be three sizes (data, "
                          "fsdp, model), at most one of them -1.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if tpu.devices % known:
            raise LaunchError(f"TrainConfig.mesh_shape = {tuple(shape)} does not divide the "
                              f"{tpu.devices} devices of {tpu.accelerator_type}.")
        shape = tuple(tpu.devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != tpu.devices:
        raise LaunchError(
            f"TrainConfig.mesh_shape = {tuple(shape)} (data x fsdp x model = "
            f"{math.prod(shape)} devices) does not match {tpu.accelerator_type}, which has "
            f"{tpu.devices} JAX devices ({tpu.chips} chips, one device per chip, "
            f"{tpu.hosts} hosts). Use a partitioning file for this slice "
            "(gin/partitioning/) or --gin.TrainConfig.mesh_shape=(...).")
    lines = [tpu.describe(), f"mesh (data, fsdp, model) = {tuple(shape)}"]
    batch = _literal(_bound(values, "TrainConfig", "batch_size"), values)
    if isinstance(batch, int):
        data_shards = shape[0] * shape[1]
        if batch % data_shards:
            raise LaunchError(f"TrainConfig.batch_size = {batch} is not divisible by data x "
                              f"fsdp = {data_shards}: the batch is split over those axes.")
        if batch % tpu.hosts:
            raise LaunchError(f"TrainConfig.batch_size = {batch} is not divisible by the "
                              f"{tpu.hosts} hosts: each host feeds an equal share of rows.")
        lines.append(f"global batch {batch}: {batch // tpu.hosts} rows per host, "
                     f"{batch // data_shards} per data shard")
    return lines
