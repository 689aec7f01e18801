"""One code version per run: the launcher packs a commit once, stores it with the run, and
ships that stored code on every launch after."""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket

from launch import startup
from launch.gcloud import absent_object, classify_failure, info, last_line
from launch.runner import Result
from launch.topology import LaunchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class RunCode:
    """The Launcher's methods about the run's code (a mixin: ``self`` is the Launcher)."""

    def code_urls(self) -> tuple[str, str]:
        """(tarball, record) of the run's code in its launch/ folder."""
        folder = startup.launch_dir(self.args.run_dir)
        return f"{folder}/code.tar.gz", f"{folder}/code.json"

    def ensure_code(self) -> dict:
        """One code version per run. The first launch packs HEAD of a clean tree (``git
        archive``) into the run's folder with ``code.json`` (commit, time, who); later
        launches reuse it, and a different HEAD is refused, naming both commits, unless
        ``--allow_code_change`` (which stores HEAD and keeps the earlier records). A record
        that cannot be read for another reason than its absence stops here: it must never
        look like a first launch."""
        if self._code is not None:
            return self._code
        a = self.args
        self._check_run_dir()
        head_result = self.runner.query(["git", "-C", ROOT, "rev-parse", "--verify", "HEAD"],
                                        dry_run_answer=Result(0, "HEAD\n"))
        if head_result.returncode:
            raise LaunchError(f"cannot read the commit of HEAD in {ROOT}: "
                              f"{last_line(head_result.stderr)}")
        head = head_result.stdout.strip()
        tarball, record_url = self.code_urls()
        absent = absent_object(record_url)
        stored = self.query_retrying(["gcloud", "storage", "cat", record_url], pretend=absent)
        previous: list[dict] = []
        if stored.returncode == 0:
            try:
                record = json.loads(stored.stdout)
                commit = str(record["commit"])
            except (ValueError, KeyError, TypeError):
                raise LaunchError(f"{record_url} is not a code record of this launcher (no "
                                  "commit in it); restore it or use another run directory."
                                  ) from None
            if commit == head:
                info(f"code: commit {head[:12]}, stored with the run at {record.get('time')}")
                self._code = record
                return record
            if not getattr(a, "allow_code_change", False):
                raise LaunchError(
                    f"{a.run_dir} runs commit {commit[:12]} (stored {record.get('time')} by "
                    f"{record.get('who')}), but HEAD is {head[:12]}. Check out {commit[:12]} "
                    f"to go on with the run's code, or pass --allow_code_change to ship "
                    f"{head[:12]} to this run from now on.")
            info(f"code: replacing commit {commit[:12]} by {head[:12]} (--allow_code_change)")
            previous = [{k: v for k, v in record.items() if k != "previous"}]
            previous += list(record.get("previous", []))
        elif classify_failure(stored) != "not_found":
            raise LaunchError(f"cannot read {record_url} (nothing was uploaded): "
                              f"{last_line(stored.stderr)}")
        status = self.runner.query(["git", "-C", ROOT, "status", "--porcelain",
                                    "--untracked-files=no"], dry_run_answer=Result(0, ""))
        dirty = bool(status.stdout.strip()) or status.returncode != 0
        if dirty and not getattr(a, "allow_dirty", False):
            raise LaunchError("the working tree has uncommitted changes (git status): a run's "
                              "code is one commit. Commit them, or pass --allow_dirty to ship "
                              "HEAD without them.")
        record = {"commit": head, "time": utc_now(), "who": who(), "dirty_tree": dirty}
        if previous:
            record["previous"] = previous
        local_tar = os.path.join(self.work_dir, f"code-{head[:12]}.tar.gz")
        local_record = os.path.join(self.work_dir, f"code-{head[:12]}.json")
        self.runner.run(["mkdir", "-p", self.work_dir])
        self.runner.run(["git", "-C", ROOT, "archive", "--format=tar.gz",
                         "--prefix=codereason_jax/", f"--output={local_tar}", head])
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        if self.runner.dry_run:
            info(f"{local_record} would hold: {json.dumps(record, sort_keys=True)}")
        else:
            with open(local_record, "w", encoding="utf-8") as f:
                f.write(text)
        self.runner.run(["gcloud", "storage", "cp", local_tar, tarball])
        self.runner.run(["gcloud", "storage", "cp", local_record, record_url])
        self._code = record
        return record
