"""Unattended runs: the startup script every (re)created VM runs, the run's STOP record, and
the workers' logs kept in the bucket."""

from __future__ import annotations

import os
import shlex

from launch import startup
from launch.gcloud import absent_object, classify_failure, info, last_line
from launch.topology import LaunchError


class Unattended:
    """The Launcher's methods about unattended runs (a mixin: ``self`` is the Launcher)."""

    def startup_script(self) -> str:
        """The VMs' startup script for this run (launch/startup.sh.in filled in)."""
        a, tpu = self.args, self.tpu()
        train = self.train_argv()
        env = ['CODEREASON_DATA_DIR="$DATA"' if not a.data_dir
               else shlex.quote(f"CODEREASON_DATA_DIR={a.data_dir}")]
        if a.tfds_dir:
            env.append(shlex.quote(f"CODEREASON_TFDS_DIR={a.tfds_dir}"))
        env += [shlex.quote(e) for e in a.env]
        return startup.render(run_dir=a.run_dir, train_command=train[1:], env=env,
                              devices=tpu.devices, local_devices=tpu.devices_per_host,
                              hosts=tpu.hosts, max_attempts=a.max_attempts, python=a.python,
                              data_from=getattr(a, "data_from", None))

    def prepare_unattended(self) -> None:
        """Store the code, write the startup script the VMs run at every boot, and keep a
        copy of it with the run."""
        self.ensure_code()
        script, path = self.startup_script(), self.startup_path()
        if self.autocheckpoint():
            info("Autocheckpoint requested: Cloud TPU sends SIGTERM before maintenance and "
                  "the trainer saves its checkpoint")
        else:
            info(f"no Autocheckpoint for {self.tpu().accelerator_type}: a maintenance event "
                  "stops the VMs without notice; training resumes from the newest checkpoint")
        if self.runner.dry_run:
            info(f"{path} would hold the startup script ({len(script.splitlines())} lines)")
        else:
            os.makedirs(self.work_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
        self.runner.run(["gcloud", "storage", "cp", path,
                         startup.launch_dir(self.args.run_dir) + "/startup.sh"])

    def run_over(self) -> str | None:
        """Why the run is over (its launch/STOP), or None while it is not."""
        url = startup.launch_dir(self.args.run_dir) + "/STOP"
        absent = absent_object(url)
        result = self.query_retrying(["gcloud", "storage", "cat", url], pretend=absent)
        if result.returncode == 0:
            return result.stdout.strip() or "(no reason given)"
        if classify_failure(result) == "not_found":
            return None
        raise LaunchError(f"cannot read {url}: {last_line(result.stderr)}")

    def log_url(self) -> str:
        """A worker's log in the run's folder: the current attempt's, or ``--attempt``'s."""
        a = self.args
        worker = "*" if a.worker == "all" else a.worker
        folder = startup.launch_dir(a.run_dir) + "/logs"
        if a.attempt is not None:
            folder += f"/attempt-{a.attempt}"
        return f"{folder}/worker-{worker}.log"

    def logs(self) -> None:
        """From the bucket with --run_dir (also for VMs that no longer exist), else live
        from the workers over ssh."""
        a = self.args
        if not a.run_dir:
            if a.attempt is not None:
                raise LaunchError("--attempt needs --run_dir: old attempts' logs are in the "
                                  "bucket.")
            self.runner.run(self.follow_command(a.worker, a.lines, a.follow))
            return
        self._check_run_dir()
        if a.follow:
            raise LaunchError("--follow streams from the workers; drop --run_dir for it "
                              "(the bucket's copy is refreshed every minute).")
        argv = ["gcloud", "storage", "cat", self.log_url()]
        result = self.query_retrying(argv)
        if result.returncode:
            raise LaunchError(f"no log at {self.log_url()}: {last_line(result.stderr)}")
        lines = result.stdout.splitlines()
        for line in lines[-a.lines:] if a.lines else lines:
            print(line)
