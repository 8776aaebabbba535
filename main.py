"""Entry points for Cloud Functions, which deploys the repository root as source.

Each target is a thin adapter in functions/; all logic lives in shared/.
"""

from functions.completion import completion
from functions.ingest import ingest
from functions.poller import poller
from functions.tuner import tuner

__all__ = ["completion", "ingest", "poller", "tuner"]
