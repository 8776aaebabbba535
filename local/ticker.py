"""Cloud Scheduler's stand-in: publish a poll-tick/v1 message every N seconds."""

from __future__ import annotations

import argparse
import os
import time

from local.stack import publish
from shared.logging import configure_logging, get_logger
from shared.messages import PollTickV1

log = get_logger("sftpipe.ticker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between ticks")
    args = parser.parse_args()
    configure_logging()
    host = os.environ["PUBSUB_EMULATOR_HOST"]
    while True:
        tick = PollTickV1()
        try:
            publish(host, args.project, args.topic, tick.to_json(), tick.attributes())
        except Exception:  # the emulator may be restarting; the next tick tries again
            log.warning("poll tick could not be published", exc_info=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
