"""A real SMTP server for the local stack: every mail it accepts becomes a ``.eml`` file.

    python -m local.mailsink --host 127.0.0.1 --port 8025 --dir .sftpipe/run/mail [--username U --password P]

Prints ``mailsink ready on smtp://HOST:PORT, writing to DIR`` once it accepts connections; an SMTP
NOOP is its health check. Files are named ``<nanoseconds>-<random>.eml`` (sorted = arrival
order) and written atomically, so a reader never sees half a mail; each starts with
``X-Mailsink-Mail-From`` / ``X-Mailsink-Rcpt-To`` headers holding the SMTP envelope.

No STARTTLS: it would need a certificate the client trusts, so the local stack sets
``SFTPIPE_SMTP_STARTTLS=false``. With ``--username``, AUTH (PLAIN or LOGIN) is required and
allowed over the plain connection, so the login path of the notifier is exercised for real.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from shared.logging import configure_logging, get_logger

log = get_logger("sftpipe.mailsink")


class MaildirHandler:
    """aiosmtpd handler that stores each accepted message in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        content = envelope.original_content or b""
        headers = (
            f"X-Mailsink-Mail-From: {envelope.mail_from}\r\n"
            f"X-Mailsink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        name = f"{time.time_ns()}-{secrets.token_hex(4)}.eml"
        partial = self.directory / f".{name}.partial"
        partial.write_bytes(headers + content)
        os.replace(partial, self.directory / name)
        log.info("mail stored", extra={"file": name, "rcpt_to": envelope.rcpt_tos})
        return "250 Message accepted for delivery"


class FixedCredentials:
    """aiosmtpd authenticator accepting one user name and password."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username.encode()
        self.password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        valid = (
            isinstance(auth_data, LoginPassword)
            and secrets.compare_digest(auth_data.login, self.username)
            and secrets.compare_digest(auth_data.password, self.password)
        )
        return AuthResult(success=valid, handled=False)


def start_mailsink(
    directory: Path, *, host: str = "127.0.0.1", port: int = 8025, username: str = "", password: str = ""
) -> Controller:
    """Start the server in a background thread (returns once it accepts connections)."""
    auth: dict[str, Any] = {}
    if username:
        # Plain-text AUTH is the point of a local sink without a certificate; aiosmtpd warns at every start.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        auth = {
            "authenticator": FixedCredentials(username, password),
            "auth_required": True,
            "auth_require_tls": False,
        }
    controller = Controller(MaildirHandler(directory), hostname=host, port=port, **auth)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description="Local SMTP server storing each mail as a .eml file.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, required=True, help="directory that receives the .eml files")
    parser.add_argument("--username", default="", help="require AUTH with this user name")
    parser.add_argument("--password", default="", help="password for --username")
    args = parser.parse_args()
    configure_logging()
    # aiosmtpd logs every SMTP command at INFO; the stored files are the record.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    controller = start_mailsink(
        args.dir, host=args.host, port=args.port, username=args.username, password=args.password
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"mailsink ready on smtp://{args.host}:{args.port}, writing to {args.dir}", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
