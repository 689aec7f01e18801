"""Print a model's parameter count and table without allocating its weights.

    python -m codereason_jax.model_info --gin_file=gin/models/pangu_2_6b.gin

The first line is ``params: N``; then one row per parameter: name, shape, dtype, logical axes.
"""

from __future__ import annotations

import sys
from typing import Sequence

from codereason_jax import cli, gin_utils
from codereason_jax.model.abstract import ParamInfo, param_table
from codereason_jax.model.config import ConfigError


def format_table(rows: Sequence[ParamInfo]) -> str:
    header = ("name", "shape", "dtype", "logical axes", "params")
    cells = [header] + [
        (r.name, "(" + ", ".join(map(str, r.shape)) + ")", r.dtype,
         "(" + ", ".join(str(a) for a in r.logical_axes) + ")", f"{r.size:,}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m codereason_jax.model_info",
                                description=__doc__.split("\n\n")[0])
    try:
        gin_utils.parse_command_line(parser, argv)
        config = gin_utils.model_config()
    except (ConfigError, ValueError) as err:  # gin's own errors are ValueErrors
        raise cli.UserError(str(err)) from err
    rows = param_table(config)
    print(f"params: {sum(r.size for r in rows)}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
