"""Cloud TPU slice types: chips, hosts and JAX devices, and a check of a run's mesh against them.

One JAX device per chip on every generation listed here: v4 and v5p chips have two TensorCores
that JAX drives as one device ("megacore"); v5e and v6e chips have one TensorCore. The number in
a v4/v5p accelerator type counts TensorCores (v4-32 = 16 chips), the number in a v5e/v6e type
counts chips (v5litepod-16 = 16 chips). Multi-host slices have 4 chips per host; v5e and v6e
slices of up to 8 chips are one host (sources: Cloud TPU system-architecture pages; the
``system_characteristics`` table of Google's xpk launcher).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import re
from typing import Iterable, Mapping, Sequence


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

_INCLUDE = re.compile(r"""^include\s+['"](.+)['"]\s*$""")
_BINDING = re.compile(r"^([A-Za-z_][\w.]*(?:/[\w.]+)?)\s*=\s*(.*)$", re.S)


def resolve_gin_path(path: str, root: str) -> str:
    """A gin file as the train command resolves it: as given, else under the project root."""
    for candidate in (path, os.path.join(root, path)):
        if os.path.isfile(candidate):
            return candidate
    raise LaunchError(f"gin file {path!r} not found (looked in the current directory and in "
                      f"{root}).")


def _statements(text: str) -> Iterable[str]:
    """Gin statements of a file: comments removed, bracketed values joined across lines."""
    pending, depth = [], 0
    for raw in text.splitlines():
        line = re.sub(r"#.*$", "", raw).strip() if "#" in raw else raw.strip()
        if not line and not pending:
            continue
        pending.append(line)
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
        if depth <= 0:
            yield " ".join(p for p in pending if p)
            pending, depth = [], 0
    if pending:
        yield " ".join(pending)


def gin_bindings(gin_files: Sequence[str], bindings: Sequence[str], root: str
                 ) -> dict[str, str]:
    """{"Configurable.param" or "MACRO": value text} after the files (includes followed) and
    the ``NAME=VALUE`` bindings, last one winning: the literal values a run will see. A light
    reading of gin (no scopes, no evaluation), enough to check the mesh before anything runs."""
    values: dict[str, str] = {}

    def read(path: str, seen: tuple[str, ...]) -> None:
        resolved = os.path.abspath(resolve_gin_path(path, root))
        if resolved in seen:
            raise LaunchError(f"gin include cycle through {path}")
        with open(resolved) as f:
            text = f.read()
        for statement in _statements(text):
            include = _INCLUDE.match(statement)
            if include:
                read(include.group(1), seen + (resolved,))
                continue
            binding = _BINDING.match(statement)
            if binding:
                values[binding.group(1)] = binding.group(2).strip()

    for path in gin_files:
        read(path, ())
    for text in bindings:
        binding = _BINDING.match(text)
        if binding:
            values[binding.group(1)] = binding.group(2).strip()
    return values


def _literal(text: str | None, values: Mapping[str, str] | None = None):
    """The Python value of a binding's text, following ``%MACRO`` references through
    ``values``; None when it is not a literal (e.g. ``@configurable()``)."""
    for _ in range(10):
        if text is None or values is None or not text.startswith("%"):
            break
        text = values.get(text[1:])
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def check_run_fits_slice(tpu: TpuType, values: Mapping[str, str]) -> list[str]:
    """Check TrainConfig.mesh_shape (data x fsdp x model must use every device) and the batch
    split; returns lines describing the plan, raises LaunchError when the run cannot start."""
    shape = _literal(values.get("TrainConfig.mesh_shape", "(-1, 1, 1)"), values)
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
            or not all(isinstance(s, int) for s in shape) or list(shape).count(-1) > 1
            or any(s == 0 or s < -1 for s in shape)):
        raise LaunchError(f"TrainConfig.mesh_shape = {values.get('TrainConfig.mesh_shape')} "
                          "must be three sizes (data, fsdp, model), at most one of them -1.")
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
    batch = _literal(values.get("TrainConfig.batch_size"), values)
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
