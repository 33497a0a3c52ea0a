"""Watching Slurm jobs from the tests: a job's fields, the node states, polling, the run's logged steps."""
import json
import subprocess
import time

FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def job_field(env, job, field):
    out = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    for token in out.split():
        if token.startswith(field + "="):
            return token.split("=", 1)[1]
    return None


def node_idle(env):
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.split()
    return out == ["idle"]


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def logged_steps(run_dir):
    metrics = run_dir / "metrics.jsonl"
    return {json.loads(line)["step"] for line in metrics.read_text().splitlines()} if metrics.is_file() else set()
