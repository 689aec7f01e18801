"""The PyTorch peer: the same PanGu-α architecture, batch and optimizer, eager and compiled.

A short reference written for the benchmark (no weights are shared with the Flax model):
word + position embeddings, ``num_layers - 1`` pre-LN blocks (biased q/k/v/o and FFN
projections, fast GeLU x·σ(1.702x), causal ``scaled_dot_product_attention``), the final
LayerNorm, the query layer (queries from a top-query table) and the tied head; cross-entropy;
AdamW (β = 0.9, 0.95, decay 0.1 on everything but biases and LayerNorms) after clipping the
gradient norm to 1. Dropout is applied only if the config has it. On a GPU it runs under
bf16 autocast with fp32 parameters, as the JAX side's dtype="bfloat16".

torch is imported inside the functions: the module imports without it. ``suite_peer`` is the
peer suite of ``python -m codereason_jax.bench``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from codereason_jax.benchmarks import configs
from codereason_jax.benchmarks.results import echo, format_rows, guarded
from codereason_jax.model.config import PanGuConfig


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def build_model(config: PanGuConfig) -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    d, heads, eps, p = config.d_model, config.num_heads, config.layer_norm_epsilon, \
        config.dropout_rate

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d, eps=eps)
            self.query = nn.Linear(d, d)
            self.key = nn.Linear(d, d)
            self.value = nn.Linear(d, d)
            self.output = nn.Linear(d, d)
            self.ln_2 = nn.LayerNorm(d, eps=eps)
            self.wi = nn.Linear(d, config.d_ff)
            self.wo = nn.Linear(config.d_ff, d)
            self.drop = nn.Dropout(p)

        def forward(self, h, query_inputs=None):
            b, t, _ = h.shape
            x = self.ln_1(h)
            q_in = x if query_inputs is None else query_inputs

            def heads_of(y):
                return y.view(b, t, heads, d // heads).transpose(1, 2)

            a = F.scaled_dot_product_attention(
                heads_of(self.query(q_in)), heads_of(self.key(x)), heads_of(self.value(x)),
                is_causal=True, dropout_p=p if self.training else 0.0)
            h = h + self.drop(self.output(a.transpose(1, 2).reshape(b, t, d)))
            y = self.wi(self.ln_2(h))
            y = y * torch.sigmoid(1.702 * y)
            return h + self.drop(self.wo(y))

    class PanGu(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(config.vocab_size, d)
            self.position = nn.Embedding(config.max_seq_len, d)
            self.blocks = nn.ModuleList(Block() for _ in range(config.num_ordinary_layers))
            self.ln_f = nn.LayerNorm(d, eps=eps)
            self.use_query_layer = config.use_query_layer
            if config.use_query_layer:
                self.top_query = nn.Embedding(config.max_seq_len, d)
                self.query_layer = Block()
            self.drop = nn.Dropout(p)
            for parameter in self.parameters():
                if parameter.dim() > 1:
                    nn.init.normal_(parameter, std=0.01)

        def forward(self, tokens, targets):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            h = self.drop(self.word(tokens) + self.position(positions)[None])
            for block in self.blocks:
                h = block(h)
            h = self.ln_f(h)
            if self.use_query_layer:
                h = self.query_layer(h, self.top_query(positions)[None].expand_as(h))
            logits = h @ self.word.weight.t()
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                                   targets.reshape(-1))

    return PanGu()


def _optimizer(model: Any, fused: bool) -> Any:
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8}
    if fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, **kwargs)


class TorchStep:
    """One prepared torch training step; ``__call__`` runs it and waits for the device."""

    def __init__(self, config: PanGuConfig, batch_size: int, seq_len: int,
                 compile_model: bool = False, device: str | None = None, seed: int = 0):
        import torch

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)
        self.model = build_model(config).to(self.device)
        self.model.train()
        self.optimizer = _optimizer(self.model, fused=True)
        self.bf16 = config.dtype == "bfloat16" and self.device != "cpu"
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1),
                               generator=generator)
        self.inputs = tokens[:, :-1].to(self.device)
        self.targets = tokens[:, 1:].to(self.device)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.name = "torch.compile" if compile_model else "torch eager"
        self.tokens = batch_size * seq_len
        start = time.perf_counter()
        self.first_loss = float(self().detach())
        self.first_step_s = time.perf_counter() - start  # compilation for torch.compile

    def __call__(self) -> Any:
        torch = self.torch
        with torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16,
                            enabled=self.bf16):
            loss = self.forward(self.inputs, self.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return loss

    def info(self) -> dict[str, Any]:
        torch = self.torch
        return {"name": self.name, "device": self.device, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "autocast_bf16": self.bf16,
                "first_step_s": self.first_step_s, "first_loss": self.first_loss,
                "fused_adamw": bool(self.optimizer.defaults.get("fused"))}


# ------------------------------------------------------------------------------ peer suite


def suite_peer(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The JAX train step timed round by round against the peer (eager, then torch.compile),
    so both see the same machine load."""
    rows = []
    for name in args.configs:
        echo(f"[bench] peer {name} ...")
        if not available():
            rows.append({"suite": "peer", "config": name, "skipped": "torch is not installed"})
            echo("[bench] peer skipped: torch is not installed")
            continue

        def run(name: str = name) -> dict[str, Any]:
            import jax

            options = configs.options_from_args(args, jax.devices()[0].platform)
            batch, seq = configs.shape_from_args(args, name)
            config = configs.build_config(name, options, args.dropout, max_seq_len=seq)
            peers: dict[str, Any] = {}
            infos = {}
            variants = [False] + ([True] if args.torch_compile in ("auto", True) else [])
            for compiled in variants:
                label = "torch.compile" if compiled else "torch eager"
                echo(f"[bench] peer {name}: preparing {label} ...")
                made = guarded(f"peer {name} {label}",
                               lambda c=compiled: TorchWorker(config, batch, seq, c))
                if isinstance(made, dict):
                    infos[label] = made
                    continue
                for _ in range(max(0, args.warmup - 1)):
                    made()
                peers[label] = made
                infos[label] = made.info()
            from codereason_jax.benchmarks.train import train_one

            try:
                row = train_one(args, name, extra_steps=peers)
            finally:
                for worker in peers.values():
                    worker.close()
            row["suite"] = "peer"
            for label, info in infos.items():
                row.setdefault("peers", {}).setdefault(label, {}).update(info)
            timed = {k: v for k, v in row.get("peers", {}).items() if "tokens_per_s" in v}
            if timed:
                best = max(timed, key=lambda k: timed[k]["tokens_per_s"])
                row["peer_best"] = best
                row["speedup_vs_best_peer"] = row["tokens_per_s"] / timed[best]["tokens_per_s"]
                if "cpu_s" in timed[best] and jax.devices()[0].platform == "cpu":
                    row["cpu_time_ratio_vs_best_peer"] = timed[best]["cpu_s"] / row["cpu_s"]
            return row

        row = guarded(f"peer {name}", run)
        row.setdefault("suite", "peer")
        row.setdefault("config", name)
        rows.append(row)
        echo(format_rows([row]))
    return rows


# ------------------------------------------------------------------------------- worker
# The peer runs in a child process: torch's and XLA's thread pools in one process spin on
# the same cores and slow each other down (a micro model's torch step went from 5 ms to
# 800 ms interleaved with JAX steps in-process). The parent alternates JAX steps with
# "step" requests to the child, so both see the same load, one at a time.


class TorchWorker:
    """A TorchStep in a child process; ``__call__`` runs one step there and returns its
    timing ({"wall": s, "cpu": s} measured in the child)."""

    def __init__(self, config: PanGuConfig, batch_size: int, seq_len: int,
                 compile_model: bool = False, timeout_s: float = 900.0):
        import dataclasses
        import json
        import subprocess
        import sys

        self._json = json
        self.name = "torch.compile" if compile_model else "torch eager"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "codereason_jax.benchmarks.torch_peer"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._send({"config": dataclasses.asdict(config), "batch_size": batch_size,
                    "seq_len": seq_len, "compile": compile_model})
        self._info = self._receive()
        if "error" in self._info:
            self.close()
            raise RuntimeError(f"{self.name}: {self._info['error']}")

    def _send(self, message: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self._json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker exited (code {self.proc.poll()})")
        return self._json.loads(line)

    def __call__(self) -> dict[str, Any]:
        self._send("step")
        return self._receive()

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send("quit")
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001
                self.proc.kill()


def _worker_main() -> None:
    import json
    import os
    import sys

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # torch's own prints must not reach the protocol stream
    request = json.loads(sys.stdin.readline())
    try:
        step = TorchStep(PanGuConfig(**request["config"]), request["batch_size"],
                         request["seq_len"], request["compile"])
        out.write(json.dumps(step.info()) + "\n")
    except Exception as error:  # noqa: BLE001
        out.write(json.dumps({"error": f"{type(error).__name__}: {error}"[:500]}) + "\n")
        return
    for line in sys.stdin:
        command = json.loads(line)
        if command == "quit":
            return
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        out.write(json.dumps({"wall": time.perf_counter() - start,
                              "cpu": time.process_time() - start_cpu}) + "\n")


if __name__ == "__main__":
    _worker_main()

