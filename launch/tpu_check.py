"""Before training, on every worker: does JAX see the slice the run was launched for?

The startup script runs ``python -m launch.tpu_check --devices=N --local_devices=M --hosts=H``
on each worker; a mismatch (a missing chip, a runtime that did not start, a host that joined
another slice) fails the attempt with one ``error:`` line, before any step is paid for.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def mismatch(expected_devices: int, expected_local: int, devices: int, local: int
             ) -> str | None:
    """A sentence naming what differs, or None when the counts are the expected ones."""
    if (devices, local) == (expected_devices, expected_local):
        return None
    return (f"JAX sees {devices} devices ({local} on this worker); the slice should have "
            f"{expected_devices} ({expected_local} per worker). Check the TPU runtime "
            "(`sudo journalctl -u tpu-runtime`) or recreate the slice.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.tpu_check")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--local_devices", type=int, required=True)
    parser.add_argument("--hosts", type=int, default=1)
    args = parser.parse_args(argv)
    import jax

    if args.hosts > 1:  # the global count needs every worker in the same job
        jax.distributed.initialize()
    devices, local = jax.device_count(), jax.local_device_count()
    print(f"worker {jax.process_index()}: jax.device_count() = {devices}, "
          f"jax.local_device_count() = {local}, {jax.devices()[0].platform}", flush=True)
    problem = mismatch(args.devices, args.local_devices, devices, local)
    if args.hosts > 1:
        jax.distributed.shutdown()  # the trainer starts its own job after this
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
