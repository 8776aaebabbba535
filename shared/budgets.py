"""Leases, retry budgets and timeouts, sized together in one place.

The promise (architecture.md, "Identity and idempotency"): a claim held by a crashed attempt
lapses before anyone waits long for it, a live attempt never loses its claim to a short lease,
and no billable call is ever made twice. README.md, "Leases, retries and timeouts", is the table
of these numbers; ``tests/unit/test_budgets.py`` checks the inequalities between them and
``tests/unit/test_deploy.py`` checks deploy/ against them.

- Every claim (an ingest or completion idempotency claim, a job's submission claim, an
  evaluation lease) is short, :data:`CLAIM_LEASE_S`, and kept alive by a heartbeat every
  :data:`HEARTBEAT_INTERVAL_S` while its work runs (``shared.leases.Heartbeat``). A worker that
  is killed stops beating: its claim lapses within a minute and the redelivery or the
  reconciler (every scheduler tick) resumes the work within two.
- A heartbeat stops by itself after the work's own worst case (a hung, not dead, worker must
  not hold a claim forever): the submission's is :func:`submission_worst_case_s`.
- Tuning reads (get, list, cancel) are retried by the SDK, each attempt bounded; the create is
  made once per attempt (:data:`CREATE_TIMEOUT_S`, no SDK retry), and after an answer that is
  not a clear yes or no the job is looked up by its label before anything else.
"""

from __future__ import annotations

# --- Tuning API calls ---------------------------------------------------------------------------
#: Seconds one tuning read (get, list, cancel) attempt may take.
TUNING_CALL_TIMEOUT_S = 20.0
#: Attempts (first included) of a tuning read for 408 and 5xx, with the SDK's exponential backoff.
READ_RETRY_ATTEMPTS = 5
#: Backoff between read attempts: 1, 2, 4, 8 s (each with up to 1 s of jitter).
RETRY_INITIAL_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 8.0
RETRY_JITTER_S = 1.0
#: Seconds the one attempt of a create (``tunings.tune``) may take. Never retried by the SDK: a
#: create whose answer is lost may still have created the job.
CREATE_TIMEOUT_S = 30.0
#: After a create that timed out or failed with 5xx: the pause before the one lookup by label
#: (itself a read, with its retries) that tries to find the job the create may have made.
LOOKUP_PAUSE_S = 2.0
#: A job whose create ended unclear is created again only when a lookup at least this long after
#: that create still finds nothing: a request Vertex received late is listed by then.
CREATE_SETTLE_S = 60.0
#: Slack for the Firestore reads and writes around the tuning calls of one submission.
FIRESTORE_SLACK_S = 15.0

# --- Claims ---------------------------------------------------------------------------------------
#: Seconds a claim holds without a heartbeat: how long a crashed attempt's work waits.
CLAIM_LEASE_S = 60
#: Seconds between two renewals of a live claim: four renewals fit in one lease.
HEARTBEAT_INTERVAL_S = 15.0
#: Renewals of a live claim within one lease, whatever lease a deployment sets
#: (``SFTPIPE_IDEMPOTENCY_LEASE_S``): one failed renewal still leaves three.
BEATS_PER_LEASE = 4

# --- Functions (deploy/variables.tf ``function_resources``) ---------------------------------------
#: Timeouts of the deployed functions; the test of deploy/ holds the Terraform defaults to these.
FUNCTION_TIMEOUT_S = {"ingest": 540, "tuner": 540, "poller": 540, "completion": 540}
#: Seconds kept free at the end of a tuner or poller invocation (logging, publishing the outbox).
INVOCATION_MARGIN_S = 30.0
#: Seconds kept free at the end of a completion invocation for what follows its last call:
#: writing the chunk, moving the cursor, publishing the continuation. No evaluation call
#: starts that could end (its whole timeout) later than the function timeout less this.
EVALUATION_RECORD_MARGIN_S = 30.0
#: Seconds the judge wants in the invocation that finalizes an evaluation: one that evaluated
#: chunks and has less left hands finalizing to a fresh invocation (a continuation), where the
#: judge gets the whole timeout. 240 s asks 200 examples x 6 calls at 600 calls a minute with
#: room for slow calls; whatever does not fit is counted as not judged.
JUDGE_MIN_TIME_S = 240.0

# --- Delivery (the subscriptions' retry policy) ---------------------------------------------------
#: Deliveries before a message is dead-lettered (deploy/variables.tf ``max_delivery_attempts``).
MAX_DELIVERY_ATTEMPTS = 5


def heartbeat_interval_s(lease_s: float) -> float:
    """Seconds between two renewals of a claim whose lease is ``lease_s``: at most
    :data:`HEARTBEAT_INTERVAL_S`, and short enough that :data:`BEATS_PER_LEASE` fit in the lease
    (a 15 s beat would lose a 10 s claim to any other delivery)."""
    return min(HEARTBEAT_INTERVAL_S, lease_s / BEATS_PER_LEASE)


def claim_call_timeout_s(lease_s: float) -> float:
    """Seconds a claim's read or write may retry, and one attempt of it may take: a quarter of the
    lease. A delivery that cannot reach Firestore fails (and is redelivered) within half a lease,
    not the client's default minute or more, and a claim written at the end of its calls still
    holds for half a lease, past its first heartbeat."""
    return lease_s / BEATS_PER_LEASE


def submission_lease_s(lease_s: float) -> float:
    """Seconds a job's SUBMITTING claim holds without its heartbeat: the deployment's lease, but
    never less than :data:`CREATE_SETTLE_S`. A tuner killed while its create is in flight records
    nothing; whoever takes its claim over looks the job up by label first, and a create Vertex
    received late is listed only that long after it was sent."""
    return max(lease_s, CREATE_SETTLE_S)


def read_call_worst_case_s() -> float:
    """Longest one tuning read can take with every retry: attempts, timeouts and backoff."""
    backoff = sum(
        min(RETRY_INITIAL_DELAY_S * 2**attempt, RETRY_MAX_DELAY_S) + RETRY_JITTER_S
        for attempt in range(READ_RETRY_ATTEMPTS - 1)
    )
    return READ_RETRY_ATTEMPTS * TUNING_CALL_TIMEOUT_S + backoff


def submission_worst_case_s() -> float:
    """Longest one job's submission can take: the lookup, the create, the lookup after an
    unclear create, and the records around them."""
    lookup_after = LOOKUP_PAUSE_S + read_call_worst_case_s()
    return read_call_worst_case_s() + CREATE_TIMEOUT_S + lookup_after + FIRESTORE_SLACK_S


def submission_time_left(function_timeout_s: float, elapsed_s: float) -> float:
    """Seconds an invocation that has run ``elapsed_s`` of its ``function_timeout_s`` may still
    spend on submissions: a job is claimed only while its whole worst case fits in them."""
    return function_timeout_s - INVOCATION_MARGIN_S - elapsed_s
