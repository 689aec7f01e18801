"""Where the job lives on every worker, and how a remote script is written as one shell line."""

from __future__ import annotations

import os
import shlex

# Layout on every worker (paths relative to the login user's home directory).
REMOTE_TARBALL = "$HOME/codereason_jax-src.tar.gz"
REMOTE_SRC = "$HOME/codereason_jax"
REMOTE_VENV = "$HOME/codereason_venv"
REMOTE_LOGS = "$HOME/codereason_logs"
REMOTE_LOG = f"{REMOTE_LOGS}/train.log"
REMOTE_PID = f"{REMOTE_LOGS}/train.pid"
DEFAULT_DATA_DIR = "$HOME/codereason_data"
LOCAL_TARBALL = os.path.join("dist", "codereason_jax-src.tar.gz")
STATE_MARK = "codereason-train-state:"
# True on a worker whose trainer process (recorded in the pid file) is alive; the command-line
# test keeps a pid reused after a reboot from counting.
ALIVE = (f'[ -f {REMOTE_PID} ] && grep -qa codereason_jax.train '
         f'"/proc/$(cat {REMOTE_PID})/cmdline" 2>/dev/null')


def shell_line(*statements: str) -> str:
    """One line of POSIX shell for `--command`: statements joined by '; ' after strict mode."""
    text = "set -eu"
    for statement in statements:  # `cmd &` is already terminated: `&;` is a syntax error
        text += (" " if text.endswith("&") else "; ") + statement
    return text


def worker_data_dir(value: str | None) -> str:
    """CODEREASON_DATA_DIR on the workers: --data_dir shell-quoted, or the default."""
    return DEFAULT_DATA_DIR if not value else shlex.quote(value)
