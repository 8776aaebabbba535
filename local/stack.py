"""The local stack: the production code against real local services.

``Stack(run_dir).up()`` starts, on free ports chosen at start-up:
- the Pub/Sub and Firestore emulators (official, Java);
- fake-gcs-server publishing a GCS notification for every finalized object to the uploads topic;
- the four functions, one functions-framework process each, reached through Pub/Sub push
  subscriptions (each with a retry policy and a dead-letter topic, as in production);
- a ticker publishing ``poll-tick/v1`` to the poll topic every N seconds (Cloud Scheduler);
- the local Vertex-compatible tuning service (``local/tuning``) on the chosen model;
- an SMTP server (aiosmtpd) and a Slack webhook receiver that store what a person would receive
  under ``run_dir/mail`` and ``run_dir/slack``.

Every process runs in its own process group; its pid and start time are written to
``run_dir/state.json`` the moment it is spawned, and its environment carries the run dir
(``SFTPIPE_STACK_OWNER``), so ``down`` (or the next ``up``, after a crash) stops exactly what was
started, also a process a killed ``up`` spawned but had no time to record, and never a recycled
pid. Logs go to ``run_dir/logs/``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local import services
from shared.datasets.limits import MALLOC_MMAP_THRESHOLD_BYTES

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("ingest", "tuner", "poller", "completion")
#: Seconds `up` waits for every service to answer before it gives up and cleans up.
READY_TIMEOUT_S = 60.0
#: Test examples the local stand-in judge sees (SFTPIPE_JUDGE_MAX_EXAMPLES in the stack): about
#: 6 calls each to a small CPU model, so the judge adds about a minute to a local evaluation.
LOCAL_JUDGE_MAX_EXAMPLES = 4
#: Validation examples each checkpoint answers before the best is chosen, and test examples an
#: earlier model of the lineage answers (SFTPIPE_CHECKPOINT_MAX_EXAMPLES and
#: SFTPIPE_CHAMPION_MAX_EXAMPLES in the stack): one CPU call each.
LOCAL_CHECKPOINT_MAX_EXAMPLES = 10
#: Seconds `down` waits after SIGINT before SIGKILL.
STOP_GRACE_S = 5.0
#: Set in every process the stack starts: `down` finds, by it, what a killed `up` had no time to record.
OWNER_VARIABLE = "SFTPIPE_STACK_OWNER"
#: Deliveries before a message goes to its subscription's dead-letter topic.
MAX_DELIVERY_ATTEMPTS = 5
#: How long a push endpoint may take before Pub/Sub redelivers (the maximum Pub/Sub allows).
ACK_DEADLINE_S = 600


class StackError(RuntimeError):
    """The stack could not start or stop; the message says which service and where its log is."""


@dataclass
class StackOptions:
    project: str = "local-project"
    bucket: str = "sftpipe-local"
    tick_interval_s: float = 10.0
    #: Model of the local tuning service ("tiny", "smollm2"), or None to run without it.
    model: str | None = "tiny"
    #: Concurrent-job quota of the local tuning service (Vertex's default quota is 1).
    tuning_max_concurrent_jobs: int = 1
    #: Extra SFTPIPE_* settings given to the functions (e.g. max concurrent jobs).
    function_env: dict[str, str] = field(default_factory=dict)


@dataclass
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; it only waits to be reaped
        return None
    return int(fields[19])


def _alive(record: ProcessRecord) -> bool:
    return _start_ticks(record.pid) == record.start_ticks


def _marked_processes(owner: str) -> list[int]:
    """Live processes whose environment says this run dir started them."""
    marker = f"{OWNER_VARIABLE}={owner}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(proc.name))
    return pids


class Stack:
    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.state_path = self.run_dir / "state.json"
        self.log_dir = self.run_dir / "logs"

    # ----------------------------------------------------------------------------- state file
    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path)

    def _records(self, state: dict[str, Any] | None) -> list[ProcessRecord]:
        return [ProcessRecord(**p) for p in (state or {}).get("processes", [])]

    # ----------------------------------------------------------------------------- lifecycle
    def status(self) -> dict[str, Any]:
        state = self.read_state()
        if state is None:
            return {"running": False, "run_dir": str(self.run_dir), "processes": {}}
        processes = {r.name: {"pid": r.pid, "alive": _alive(r), "log": r.log} for r in self._records(state)}
        running = (
            bool(processes) and state.get("ready", False) and all(p["alive"] for p in processes.values())
        )
        return {
            "running": running,
            "run_dir": str(self.run_dir),
            "processes": processes,
            "env": state.get("env", {}),
        }

    def env(self) -> dict[str, str]:
        state = self.read_state()
        if not state or not state.get("ready"):
            raise StackError(f"no stack is running in {self.run_dir} (run `sftpipe stack up`)")
        return dict(state["env"])

    def up(
        self, options: StackOptions | None = None, log: Callable[[str], None] = lambda _: None
    ) -> dict[str, str]:
        """Start the stack and return its environment; idempotent when one is already healthy."""
        options = options or StackOptions()
        current = self.status()
        if current["running"]:
            log(f"stack already running in {self.run_dir}")
            return dict(current["env"])
        if self.read_state() is not None:
            log("cleaning up a stack left behind by an earlier run")
            self.down()
        started = time.monotonic()
        try:
            env = self._start(options, log)
        except BaseException:
            self.down()
            raise
        log(f"stack ready in {time.monotonic() - started:.1f} s")
        return env

    def down(self) -> list[str]:
        """Stop every process this run dir started (and nothing else); returns their names."""
        state = self.read_state()
        records = [r for r in self._records(state) if _alive(r)]
        # SIGINT, not SIGTERM: gunicorn (functions-framework) takes SIGTERM as "finish gracefully
        # within 30 s" and SIGINT as "stop now"; the JVMs, fake-gcs-server and our Python
        # services stop on either.
        for record in records:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(_alive(r) for r in records) and time.monotonic() < deadline:
            time.sleep(0.05)
        for record in records:
            if _alive(record):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(record.pid, signal.SIGKILL)
        # Group members that outlived their leader (gunicorn workers) are killed with the group.
        for record in records:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
        # A process spawned by an `up` that was killed before it could record it carries this run
        # dir's mark in its environment: find it that way.
        marked = _marked_processes(str(self.run_dir))
        for pid in marked:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # A process leaves /proc's view (environ unreadable) before its sockets are closed: wait for
        # the ports as well, so that what `down` returns to finds them free.
        ports = [int(port) for port in (state or {}).get("ports", {}).values()]
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and (
            any(_alive(r) for r in records)
            or _marked_processes(str(self.run_dir))
            or not services.listening_ports().isdisjoint(ports)
        ):
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        return [r.name for r in records]

    # ----------------------------------------------------------------------------- start-up
    def _spawn(self, state: dict[str, Any], name: str, argv: list[str], env: dict[str, str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ticks = _start_ticks(process.pid) or 0
        state["processes"].append(
            ProcessRecord(
                name=name, pid=process.pid, start_ticks=ticks, argv=argv, log=str(log_path)
            ).__dict__
        )
        # Written at once, so that a crash of `up` itself leaves a record of what to stop.
        self._write_state(state)

    def _wait(self, state: dict[str, Any], name: str, probe: Callable[[], bool], deadline: float) -> None:
        record = next(ProcessRecord(**p) for p in state["processes"] if p["name"] == name)
        while time.monotonic() < deadline:
            if probe():
                return
            if not _alive(record):
                raise StackError(f"{name} exited during start-up; see {record.log}:\n{_tail(record.log)}")
            time.sleep(0.1)
        raise StackError(
            f"{name} was not ready after {READY_TIMEOUT_S:.0f} s; see {record.log}:\n{_tail(record.log)}"
        )

    def _start(self, options: StackOptions, log: Callable[[str], None]) -> dict[str, str]:
        ports = {
            name: services.free_port()
            for name in (
                "pubsub",
                "firestore",
                "firestore_ws",
                "gcs",
                "tuning",
                "smtp",
                "slack",
                *(f"fn_{f}" for f in FUNCTIONS),
            )
        }
        state: dict[str, Any] = {
            "created": datetime.now(UTC).isoformat(),
            "ready": False,
            "ports": ports,
            "processes": [],
        }
        self._write_state(state)
        mail_dir, slack_dir = self.run_dir / "mail", self.run_dir / "slack"
        mail_dir.mkdir(parents=True, exist_ok=True)
        slack_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "SFTPIPE_PROJECT": options.project,
            "GOOGLE_CLOUD_PROJECT": options.project,
            "SFTPIPE_BUCKET": options.bucket,
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports['pubsub']}",
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{ports['firestore']}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{ports['gcs']}",
            "SFTPIPE_TUNING_API_URL": f"http://127.0.0.1:{ports['tuning']}/" if options.model else "",
            # The judge is the local model standing in (noisy, and each verdict costs CPU
            # seconds), so it sees a few examples; without a model nothing could judge.
            "SFTPIPE_JUDGE_MAX_EXAMPLES": str(LOCAL_JUDGE_MAX_EXAMPLES) if options.model else "0",
            "SFTPIPE_CHECKPOINT_MAX_EXAMPLES": str(LOCAL_CHECKPOINT_MAX_EXAMPLES),
            "SFTPIPE_CHAMPION_MAX_EXAMPLES": str(LOCAL_CHECKPOINT_MAX_EXAMPLES),
            "SFTPIPE_SMTP_HOST": "127.0.0.1",
            "SFTPIPE_SMTP_PORT": str(ports["smtp"]),
            # The local mail sink speaks plain SMTP; production uses STARTTLS.
            "SFTPIPE_SMTP_STARTTLS": "false",
            "SFTPIPE_MAIL_TO": "ml-team@example.com",
            # Uploads may send their result to the example team's own domain, nowhere else.
            "SFTPIPE_NOTIFY_EMAIL_DOMAINS": "example.com",
            "SFTPIPE_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{ports['slack']}/webhook",
        }
        process_env = {
            **os.environ,
            **env,
            **options.function_env,
            "PYTHONUNBUFFERED": "1",
            OWNER_VARIABLE: str(self.run_dir),
        }
        deadline = time.monotonic() + READY_TIMEOUT_S

        log("starting the Pub/Sub and Firestore emulators and the functions")
        self._spawn(state, "pubsub", services.pubsub_emulator_argv(ports["pubsub"]), process_env)
        self._spawn(
            state,
            "firestore",
            services.firestore_emulator_argv(ports["firestore"], ports["firestore_ws"]),
            process_env,
        )
        for function in FUNCTIONS:
            argv = [
                sys.executable,
                "-m",
                "functions_framework",
                "--target",
                function,
                "--source",
                str(REPO_ROOT / "main.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(ports[f"fn_{function}"]),
            ]
            # The functions' allocator as deployed (deploy/functions.tf; MALLOC_MMAP_THRESHOLD_BYTES),
            # not the tuning service's: its tensors are large and short-lived, and a fixed threshold
            # would map and unmap each one.
            allocator = {"MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD_BYTES)}
            self._spawn(state, function, argv, {**process_env, **allocator, "THREADS": "8"})

        self._spawn(
            state,
            "mailsink",
            [
                sys.executable,
                "-m",
                "local.mailsink",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["smtp"]),
                "--dir",
                str(mail_dir),
            ],
            process_env,
        )
        self._spawn(
            state,
            "slacksink",
            [
                sys.executable,
                "-m",
                "local.slacksink",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["slack"]),
                "--dir",
                str(slack_dir),
            ],
            process_env,
        )
        if options.model:
            tuning_argv = [
                sys.executable,
                "-m",
                "local.tuning",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["tuning"]),
                "--model",
                options.model,
                "--state-dir",
                str(self.run_dir / "tuning"),
                "--max-concurrent-jobs",
                str(options.tuning_max_concurrent_jobs),
            ]
            self._spawn(state, "tuning", tuning_argv, process_env)

        pubsub_url = f"http://127.0.0.1:{ports['pubsub']}"
        self._wait(state, "pubsub", lambda: services.http_answers(pubsub_url + "/", "Ok"), deadline)
        log("creating topics and push subscriptions")
        self._create_pubsub_resources(pubsub_url, options, ports)

        self._spawn(
            state,
            "gcs",
            services.fake_gcs_argv(
                ports["gcs"], project=options.project, notification_topic=_uploads_topic(options)
            ),
            process_env,
        )
        gcs_url = env["STORAGE_EMULATOR_HOST"]
        self._wait(state, "gcs", lambda: services.http_answers(gcs_url + "/storage/v1/b"), deadline)
        _request("POST", f"{gcs_url}/storage/v1/b?project={options.project}", {"name": options.bucket})

        firestore_url = f"http://127.0.0.1:{ports['firestore']}/"
        self._wait(state, "firestore", lambda: services.http_answers(firestore_url, "Ok"), deadline)
        for function in FUNCTIONS:
            url = f"http://127.0.0.1:{ports[f'fn_{function}']}/"
            self._wait(state, function, lambda url=url: services.http_answers(url), deadline)
        self._wait(state, "mailsink", lambda: services.port_open(ports["smtp"]), deadline)
        slack_url = f"http://127.0.0.1:{ports['slack']}/"
        self._wait(state, "slacksink", lambda: services.http_answers(slack_url, "ok"), deadline)
        if options.model:
            tuning_url = f"http://127.0.0.1:{ports['tuning']}/healthz"
            self._wait(state, "tuning", lambda: services.http_answers(tuning_url), deadline)

        ticker_argv = [
            sys.executable,
            "-m",
            "local.ticker",
            "--project",
            options.project,
            "--topic",
            _setting(options, "poll_ticks_topic"),
            "--interval",
            str(options.tick_interval_s),
        ]
        self._spawn(state, "ticker", ticker_argv, process_env)

        # The functions' extra settings too: a CLI or a test in the stack's environment acts with
        # the same settings (a lease, a quota) as the functions it talks to.
        env.update(options.function_env)
        env.update(
            {
                "SFTPIPE_RUN_DIR": str(self.run_dir),
                "SFTPIPE_MAIL_DIR": str(mail_dir),
                "SFTPIPE_SLACK_DIR": str(slack_dir),
            }
        )
        state["env"] = env
        state["options"] = options.__dict__
        state["ready"] = True
        self._write_state(state)
        return env

    def _create_pubsub_resources(self, pubsub_url: str, options: StackOptions, ports: dict[str, int]) -> None:
        project = options.project
        suffix = _setting(options, "dead_letter_suffix")
        routes = {
            "ingest": _uploads_topic(options),
            "tuner": _setting(options, "tuning_requests_topic"),
            "poller": _setting(options, "poll_ticks_topic"),
            "completion": _setting(options, "job_events_topic"),
        }
        for topic in set(routes.values()):
            _request("PUT", f"{pubsub_url}/v1/projects/{project}/topics/{topic}", {})
        for function, topic in routes.items():
            subscription = f"{function}-{topic}"
            dead_letter = f"{subscription}{suffix}"
            _request("PUT", f"{pubsub_url}/v1/projects/{project}/topics/{dead_letter}", {})
            # A topic without subscriptions drops messages: keep dead letters for inspection.
            _request(
                "PUT",
                f"{pubsub_url}/v1/projects/{project}/subscriptions/{dead_letter}",
                {"topic": f"projects/{project}/topics/{dead_letter}"},
            )
            _request(
                "PUT",
                f"{pubsub_url}/v1/projects/{project}/subscriptions/{subscription}",
                {
                    "topic": f"projects/{project}/topics/{topic}",
                    "pushConfig": {"pushEndpoint": f"http://127.0.0.1:{ports[f'fn_{function}']}/"},
                    "ackDeadlineSeconds": ACK_DEADLINE_S,
                    "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "10s"},
                    "deadLetterPolicy": {
                        "deadLetterTopic": f"projects/{project}/topics/{dead_letter}",
                        "maxDeliveryAttempts": MAX_DELIVERY_ATTEMPTS,
                    },
                },
            )


def _setting(options: StackOptions, name: str) -> str:
    """A topic name as the functions will see it (their SFTPIPE_* override, else the default)."""
    from shared.config import Settings

    override = options.function_env.get(f"SFTPIPE_{name.upper()}")
    return override or str(Settings.model_fields[name].default)


def _uploads_topic(options: StackOptions) -> str:
    return _setting(options, "uploads_topic")


def _request(method: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 409:  # already exists: a resource from an earlier `up` on the same emulator
            return {}
        raise StackError(f"{method} {url} failed: {exc.code} {exc.read().decode(errors='replace')}") from exc
    return json.loads(payload) if payload.strip() else {}


def publish(pubsub_host: str, project: str, topic: str, data: bytes, attributes: dict[str, str]) -> str:
    """Publish one message over the emulator's REST API (used by the ticker and the CLI)."""
    body = {"messages": [{"data": base64.b64encode(data).decode(), "attributes": attributes}]}
    result = _request("POST", f"http://{pubsub_host}/v1/projects/{project}/topics/{topic}:publish", body)
    return str(result["messageIds"][0])


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
