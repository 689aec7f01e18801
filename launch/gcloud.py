"""gcloud's answers: which failures prove a resource is gone, which waiting can fix, and
the one line of a failure worth showing."""

from __future__ import annotations

import re
import sys

from launch.runner import Result

# gcloud reports an API error as `ERROR: (gcloud.GROUP.COMMAND) STATUS: message`.
_GCLOUD_ERROR = re.compile(r"^ERROR: \(gcloud[.\w-]*\)(.*)$", re.M)
_PERMANENT = ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT",
              "do not currently have an active account", "gcloud auth login",
              "Reauthentication")
_ABSENT_OBJECT = ("matched no objects", "No URLs matched")


def classify_failure(result: Result) -> str:
    """``not_found`` only for gcloud's own NOT_FOUND (404) answer; ``permanent`` for what
    waiting cannot fix (gcloud missing, authentication, permissions, a bad argument);
    ``transient`` for the rest (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, 429, a dropped
    connection, anything unrecognised), which is retried. "command not found" from a shell is
    not a NOT_FOUND: only the API's answer proves a resource is gone."""
    if result.returncode in (126, 127):
        return "permanent"
    errors = " ".join(m.group(1) for m in _GCLOUD_ERROR.finditer(result.stderr))
    if re.search(r"\bNOT_FOUND\b|\b404\b", errors) or any(
            marker in errors for marker in _ABSENT_OBJECT):
        return "not_found"
    if any(marker in result.stderr for marker in _PERMANENT):
        return "permanent"
    return "transient"


def last_line(text: str) -> str:
    """The last non-empty line of gcloud's stderr: one `error:` line, not a dump."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def info(message: str) -> None:
    """Progress and plans go to stderr: stdout of a dry run holds only commands."""
    print(message, file=sys.stderr, flush=True)


def absent_object(url: str) -> Result:
    """What ``gcloud storage cat`` answers for an object that does not exist (a dry run's
    pretended answer)."""
    return Result(1, "", "ERROR: (gcloud.storage.cat) The following URLs matched no objects or "
                  f"files:\n-{url}")
