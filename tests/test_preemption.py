"""A preemption notice on one host of two stops both at one step, with no per-step collective.

Two processes x 4 CPU devices (jax.distributed on loopback). Process 1 stops itself after step 3
(``CODEREASON_FAILPOINT=pause@3``), gets SIGTERM, and continues; process 0 never gets a signal.
JAX's preemption service (``multihost_utils.reached_preemption_sync_point``) must make both
save the same step and exit 0, and a restart must resume from exactly that step.
"""

import json
import re
import signal

from test_multihost import _finish, _start_hosts, _write_gin, held_port, wait_stopped


def test_sigterm_to_one_host_saves_both_at_one_agreed_step_and_resumes(tmp_path):
    # JAX's notifier notices SIGTERM on its own schedule (it polls for it about once a second)
    # and the hosts agree on a later step, so the notice lands some steps after step 3: on an
    # idle machine 5 steps were not enough. 64 leave room for several seconds of tiny steps;
    # a notice later than that fails the test below instead of passing unnoticed.
    num_steps = 64
    command = _write_gin(tmp_path, num_steps, every=100)
    run_dir = tmp_path / "run"
    with held_port() as port:
        hosts = _start_hosts(command, run_dir, tmp_path, "first", port, {1: "pause@3"})
        try:
            wait_stopped(hosts[1])
            hosts[1].send_signal(signal.SIGTERM)  # handled when it continues
            hosts[1].send_signal(signal.SIGCONT)
        except BaseException:
            for host in hosts:
                host.kill()
            raise
        codes, outputs = _finish(hosts, tmp_path, "first")  # a hang fails at the guard
    assert codes == [0, 0], outputs
    pattern = (r"SIGTERM: saved the checkpoint of step (\d+) and stopped; run the same command "
               r"to resume\. \(step agreed by every host through JAX's preemption service\)")
    saved = [re.findall(pattern, out) for out in outputs]
    assert saved[0] == saved[1] and len(saved[0]) == 1, saved
    step = int(saved[0][0])
    # The agreed step is after the one the notice arrived at, and before the end.
    assert 3 <= step < num_steps and (run_dir / "checkpoints" / str(step)).is_dir()
    with open(run_dir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == list(range(step))

    with held_port() as port:
        codes, outputs = _finish(_start_hosts(command, run_dir, tmp_path, "second", port),
                                 tmp_path, "second")
    assert codes == [0, 0], outputs
    assert f"resuming from the checkpoint of step {step}" in outputs[0]
    with open(run_dir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == list(range(num_steps))
