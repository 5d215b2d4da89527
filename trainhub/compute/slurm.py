"""The Slurm commands TrainHub calls (sbatch, squeue, scancel, sinfo, scontrol), each with an
argument list it builds itself: no shell, and no string of a member's ever reaches one."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from django.conf import settings

# Slurm's own partition and node names; anything else is refused before a command is built.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NODELIST_PATTERN = re.compile(r"^[A-Za-z0-9_.,\[\]-]{1,1000}$")
BAD_PARTITION = "A Slurm partition is named with letters, digits, '_', '.' and '-' (at most 63), not {name!r}."
SLURM_UNAVAILABLE = "Slurm did not answer: {error}"
COMMAND_SECONDS = 20
# squeue's states of a job that will not run any more.
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)

COMPLETING_REASONS = {"NodeDown": "NODE_FAIL", "TimeLimit": "TIMEOUT"}


class SlurmError(Exception):
    """A Slurm command failed; the message is Slurm's own."""


class SlurmUnreachable(SlurmError):
    """Slurm's controller did not answer the command (down, or not answering within COMMAND_SECONDS):
    what the command asked may or may not have been done."""


# What Slurm's commands say when they cannot reach its controller.
UNREACHABLE_WORDS = "Unable to contact slurm controller"


def check_partition(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ValueError(BAD_PARTITION.format(name=name))
    return name


def _node_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ValueError(f"not a Slurm node name: {name!r}")
    return name


def _environment() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": "C"}
    # On a job's host, slurmd gives its tasks SLURM_CONF.
    conf = settings.TRAINHUB_SLURM_CONF or os.environ.get("SLURM_CONF")
    if conf:
        env["SLURM_CONF"] = conf
    return env


def command(name: str, *arguments: str, stdin: str | None = None) -> str:
    """Run one Slurm command; its standard output, or SlurmError with what it said."""
    program = os.path.join(settings.TRAINHUB_SLURM_BIN_DIR, name) if settings.TRAINHUB_SLURM_BIN_DIR else name
    try:
        done = subprocess.run(
            [program, *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=COMMAND_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise SlurmUnreachable(SLURM_UNAVAILABLE.format(error=error)) from None
    except OSError as error:
        raise SlurmError(SLURM_UNAVAILABLE.format(error=error)) from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().replace("\n", " ")
        failure = SlurmUnreachable if UNREACHABLE_WORDS.lower() in said.lower() else SlurmError
        raise failure(f"{name} failed: {said or f'exit code {done.returncode}'}")
    return done.stdout


def submit(arguments: list[str], script: str) -> str:
    """sbatch the script (read from standard input) with these options; the job's id."""
    output = command("sbatch", "--parsable", *arguments, stdin=script).strip()
    job_id = output.split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {output!r}, not a job id")
    return job_id


def job_ids_named(names: list[str]) -> dict[str, str]:
    """The ids of the jobs Slurm holds under these names, by name (the newest where several)."""
    if not names:
        return {}
    for name in names:
        _node_name(name)  # the same characters
    output = command("squeue", "--noheader", "--states=all", f"--name={','.join(names)}", "--format=%j|%i")
    found: dict[str, str] = {}
    for line in output.splitlines():
        name, _, job_id = line.strip().partition("|")
        if name in names and job_id.isdigit() and int(job_id) > int(found.get(name, "0")):
            found[name] = job_id
    return found


def cancel(job_id: str) -> None:
    command("scancel", _job_id(job_id))


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    reason: str
    nodes: str
    # Slurm's words for the job's time limit ("10:00", "1-00:00:00", "UNLIMITED"), as it enforces it.
    time_limit: str = ""

    @property
    def verdict(self) -> str:
        """The job's end as Slurm decided it: while its processes are still being stopped, squeue and
        scontrol say COMPLETING, and the reason tells a node failure or a time limit apart."""
        if self.state == "COMPLETING":
            return COMPLETING_REASONS.get(self.reason, self.state)
        return self.state

    @property
    def ended(self) -> bool:
        return self.verdict in ENDED_STATES


def jobs(job_ids: list[str]) -> dict[str, JobState]:
    """What Slurm knows of these jobs (those it has forgotten are missing from the answer)."""
    if not job_ids:
        return {}
    wanted = {_job_id(job_id) for job_id in job_ids}
    # Every job of every state Slurm still holds, filtered here: `--jobs` with one forgotten id
    # fails the whole query.
    output = command("squeue", "--noheader", "--states=all", "--format=%i|%T|%r|%N|%l")
    found = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[0] in wanted:
            found[parts[0]] = JobState(*parts)
    return found


def job_state(job_id: str) -> JobState | None:
    """One job, asked through scontrol (as a job's own task does)."""
    try:
        output = command("scontrol", "--oneliner", "show", "job", _job_id(job_id))
    except SlurmError:
        return None
    fields = dict(part.split("=", 1) for part in output.split() if "=" in part)
    return JobState(
        job_id,
        fields.get("JobState", ""),
        fields.get("Reason", ""),
        fields.get("NodeList", ""),
        fields.get("TimeLimit", ""),
    )


@dataclass(frozen=True)
class SlurmNode:
    name: str
    state: str
    cpus: str
    memory_mb: str
    gres: str
    reason: str
    address: str
    cpu_load: str  # the node's load average as slurmd last reported it ("N/A" before it has)
    free_memory_mb: str


def partition_nodes(partition: str) -> list[SlurmNode]:
    """The partition's nodes, their states and load, as sinfo reports them."""
    output = command(
        "sinfo",
        "--noheader",
        "--Node",
        f"--partition={check_partition(partition)}",
        "--format=%N|%T|%c|%m|%G|%E|%o|%O|%e",
    )
    nodes = []
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 9:
            nodes.append(SlurmNode(*parts))
    return nodes


def failed_nodes(nodelist: str) -> list[str]:
    """Of a job's nodes (Slurm's node list, e.g. n[1-2]), those Slurm has down or not responding."""
    if not NODELIST_PATTERN.match(nodelist or ""):
        return []
    output = command("sinfo", "--noheader", "--Node", f"--nodes={nodelist}", "--format=%N|%T")
    failed = []
    for line in output.splitlines():
        name, _, state = line.strip().partition("|")
        if state.endswith("*") or state.split("+")[0].rstrip("*") in ("down", "fail", "failing", "drained"):
            failed.append(name)
    return sorted(set(failed))


def hostnames(nodelist: str) -> list[str]:
    """A job's node list (e.g. n[1-2]) host by host, in Slurm's order: a task's SLURM_NODEID is its
    host's place in it."""
    if not NODELIST_PATTERN.match(nodelist or ""):
        return []
    return command("scontrol", "show", "hostnames", nodelist).split()


def partition_exists(partition: str) -> bool:
    output = command("sinfo", "--noheader", f"--partition={check_partition(partition)}", "--format=%P")
    return bool(output.strip())


def node_address(name: str) -> str:
    """The address Slurm reaches a node at (NodeAddr), which other hosts of a job reach it at too."""
    output = command("scontrol", "--oneliner", "show", "node", _node_name(name))
    fields = dict(part.split("=", 1) for part in output.split() if "=" in part)
    return fields.get("NodeAddr", name)


def time_limit_words(limit: str) -> str:
    """Slurm's time limit ("[days-][hours:]minutes:seconds", or a number of minutes) in words:
    "10 min", "2 h 30 min", "1 day 4 h"; Slurm's own text when it is not a duration."""
    days, _, clock = limit.rpartition("-")
    parts = clock.split(":")
    if not (days or "0").isdigit() or not all(part.isdigit() for part in parts) or not 1 <= len(parts) <= 3:
        return limit
    if len(parts) == 1:
        parts = [parts[0], "0"]  # minutes alone
    numbers = [int(part) for part in parts]
    if len(numbers) == 2:
        numbers.insert(0, 0)
    hours, minutes, seconds = numbers
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    words = []
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min"), (1, "s")):
        count, total = divmod(total, size)
        if count:
            words.append(f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}")
    return " ".join(words) or "0 s"


def _job_id(job_id: str) -> str:
    if not str(job_id).isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return str(job_id)
