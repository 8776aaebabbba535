"""Tuner and poller against the emulators and the local tuning service (tiny model).

The session stack's own functions run too: its tuner receives what is published to
tuning-requests and its poller ticks every 2 s, so every test here also runs against real,
concurrent deliveries.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from shared.config import Settings
from shared.errors import TransientError, is_transient
from shared.messages import Hyperparameters, TuningRequestV1
from shared.runtime import Runtime
from shared.state.jobs import QUEUED, SUBMITTING, SUCCEEDED, TERMINAL, is_forward
from shared.state.store import JobStore
from shared.tuning.client import make_client
from shared.tuning.poll import VANISHED, poll_tick
from shared.tuning.submit import (
    JOB_ID_LABEL,
    derive_job_id,
    dispatch,
    find_tuning_job,
    handle_tuning_request,
)
from tests.integration.conftest import wait_for

Subscribe = Callable[[str], Callable[[], list[dict[str, Any]]]]
#: Seconds a tiny-model job needs from request to SUCCEEDED on a busy 2-core machine, with margin.
JOB_TIMEOUT_S = 180.0


def _examples(tag: str, count: int = 12) -> bytes:
    lines = []
    for i in range(count):
        label = "positive" if i % 2 else "negative"
        example = {
            "contents": [
                {"role": "user", "parts": [{"text": f"{tag} review number {i} is {label}"}]},
                {"role": "model", "parts": [{"text": label}]},
            ]
        }
        lines.append(orjson.dumps(example))
    return b"\n".join(lines) + b"\n"


def _request(runtime: Runtime, tag: str, examples: int = 12, **overrides: Any) -> TuningRequestV1:
    """A request for prepared files uploaded outside incoming/ (so ingest ignores them)."""
    bucket = runtime.storage.bucket(runtime.settings.bucket)
    bucket.blob(f"prepared/{tag}/train.jsonl").upload_from_string(_examples(tag, examples))
    fields: dict[str, Any] = {
        "dataset_id": f"{tag}-0000000000000000",
        "base_model": "gemini-2.5-flash",
        "training_uri": f"gs://{runtime.settings.bucket}/prepared/{tag}/train.jsonl",
        "hyperparameters": Hyperparameters(epochs=1),
    }
    fields.update(overrides)
    return TuningRequestV1(**fields)


def _publish(runtime: Runtime, request: TuningRequestV1) -> None:
    runtime.publish(runtime.settings.tuning_requests_topic, request.to_json(), **request.attributes())


@pytest.fixture
def client(runtime: Runtime) -> genai.Client:
    return make_client(runtime.settings, retry_quota_errors=False)


def _job(runtime: Runtime, job_id: str) -> dict[str, Any] | None:
    snapshot = runtime.firestore.collection(runtime.settings.jobs_collection).document(job_id).get()
    return snapshot.to_dict() if snapshot.exists else None


def _service_jobs(client: genai.Client, job_id: str) -> list[types.TuningJob]:
    config = types.ListTuningJobsConfig(filter=f'labels.{JOB_ID_LABEL}="{job_id}"')
    return list(client.tunings.list(config=config))


def _finished(runtime: Runtime, job_id: str) -> dict[str, Any] | None:
    job = _job(runtime, job_id)
    return job if job and job["status"] in TERMINAL else None


@pytest.mark.slow(35)
def test_the_same_request_delivered_three_times_at_once_creates_one_job(
    runtime: Runtime, client: genai.Client
) -> None:
    request = _request(runtime, "triplicate")
    job_id = derive_job_id(request)

    threads = [threading.Thread(target=_publish, args=(runtime, request)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    job = wait_for(lambda: _finished(runtime, job_id), timeout=JOB_TIMEOUT_S, what="the job to finish")
    assert job["status"] == SUCCEEDED, job.get("error")
    assert len(_service_jobs(client, job_id)) == 1
    jobs = list(runtime.firestore.collection(runtime.settings.jobs_collection).stream())
    assert [doc.id for doc in jobs] == [job_id]
    history = sorted(job["history"], key=lambda entry: entry["sequence"])
    assert [entry["sequence"] for entry in history] == list(range(len(history)))
    assert (history[0]["state"], history[-1]["state"]) == ("QUEUED", SUCCEEDED)
    assert all(is_forward(a["state"], b["state"]) for a, b in itertools.pairwise(history))
    assert job["tuned_endpoint"]


@pytest.mark.slow(18)
def test_a_tuner_that_died_after_submitting_is_repaired_without_a_second_job(
    runtime: Runtime, client: genai.Client
) -> None:
    request = _request(runtime, "crashed")
    job_id = derive_job_id(request)
    # What the crashed tuner left: Vertex has the job, Firestore still says SUBMITTING.
    accepted = client.tunings.tune(
        base_model=request.base_model,
        training_dataset=types.TuningDataset(gcs_uri=request.training_uri),
        config=types.CreateTuningJobConfig(epoch_count=1, labels={JOB_ID_LABEL: job_id}),
    )
    store = JobStore(runtime.firestore, runtime.settings)
    store.create_queued(job_id, orjson.loads(request.to_json()), request.dataset_id, request.base_model)
    store.touch(job_id, {"status": SUBMITTING, "submit_lease": datetime.now(UTC) - timedelta(seconds=1)})

    _publish(runtime, request)  # the redelivery

    job = wait_for(lambda: (j := _job(runtime, job_id)) and j.get("tuning_job_name") and j, what="the repair")
    assert job["tuning_job_name"] == accepted.name
    assert [j.name for j in _service_jobs(client, job_id)] == [accepted.name]
    wait_for(lambda: _finished(runtime, job_id), timeout=JOB_TIMEOUT_S, what="the repaired job to finish")
    assert len(_service_jobs(client, job_id)) == 1


def _tick_as_delivered(runtime: Runtime, client: genai.Client, attempts: int = 3) -> None:
    """A tick as Pub/Sub runs it: a transient failure (the emulator's transaction lock timeout
    when ticks contend) is delivered again, anything else fails the test."""
    for attempt in range(1, attempts + 1):
        try:
            poll_tick(runtime, client)
            return
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts:
                raise


@pytest.mark.slow(50)
def test_overlapping_poller_ticks_publish_one_event_per_transition(
    runtime: Runtime, client: genai.Client, subscribe: Subscribe
) -> None:
    events = subscribe(runtime.settings.job_events_topic)
    request = _request(runtime, "overlap")
    job_id = derive_job_id(request)
    handle_tuning_request(request, runtime, client)
    stop = threading.Event()

    def tick_forever() -> None:  # two extra pollers racing the stack's own every-2-s ticks
        while not stop.is_set():
            _tick_as_delivered(Runtime(Settings()), client)

    tickers = [threading.Thread(target=tick_forever) for _ in range(2)]
    for ticker in tickers:
        ticker.start()
    try:
        wait_for(lambda: _finished(runtime, job_id), timeout=JOB_TIMEOUT_S, what="the job to finish")
    finally:
        stop.set()
        for ticker in tickers:
            ticker.join()
    _tick_as_delivered(runtime, client)

    def all_events() -> list[dict[str, Any]]:
        seen = [
            e["body"] for e in events() if e["body"]["job_id"] == job_id and e["body"]["kind"] == "transition"
        ]
        return seen if any(e["terminal"] for e in seen) else []

    seen = wait_for(all_events, what="the terminal event")
    time.sleep(3)  # let any duplicate arrive before counting
    sequences = sorted(e["sequence"] for e in all_events())
    job = _job(runtime, job_id)
    assert sequences == list(range(job["sequence"] + 1))
    assert [e["state"] for e in sorted(seen, key=lambda e: e["sequence"])][-1] == SUCCEEDED


@pytest.mark.slow(35)
def test_with_a_quota_of_one_three_requests_run_one_at_a_time_in_arrival_order(
    runtime: Runtime, client: genai.Client
) -> None:
    requests = [_request(runtime, f"fifo{i}") for i in range(3)]
    for request in requests:
        _publish(runtime, request)
        time.sleep(0.5)  # a clear arrival order
    job_ids = [derive_job_id(r) for r in requests]

    jobs = [
        wait_for(lambda j=j: _finished(runtime, j), timeout=3 * JOB_TIMEOUT_S, what=f"job {j}")
        for j in job_ids
    ]

    assert [job["status"] for job in jobs] == [SUCCEEDED] * 3
    assert [job["queued_at"] for job in jobs] == sorted(job["queued_at"] for job in jobs)
    runs = [client.tunings.get(name=job["tuning_job_name"]) for job in jobs]
    starts = [run.create_time for run in runs]
    assert starts == sorted(starts), "submitted in arrival order"
    for earlier, later in itertools.pairwise(runs):
        assert earlier.end_time <= later.start_time, "never two jobs running at once"


def test_a_job_whose_tuning_job_vanished_is_failed_with_the_reason(
    runtime: Runtime, client: genai.Client
) -> None:
    request = _request(runtime, "vanished")
    job_id = derive_job_id(request)
    store = JobStore(runtime.firestore, runtime.settings)
    store.create_queued(job_id, orjson.loads(request.to_json()), request.dataset_id, request.base_model)
    missing = (
        f"projects/{runtime.settings.project}/locations/{runtime.settings.location}/tuningJobs/999999999"
    )
    store.touch(job_id, {"status": "JOB_STATE_RUNNING", "tuning_job_name": missing})

    poll_tick(runtime, client)

    job = _job(runtime, job_id)
    assert job["status"] == "JOB_STATE_FAILED"
    assert job["error"] == VANISHED


def test_a_request_vertex_rejects_fails_the_job_with_vertex_message(
    runtime: Runtime, client: genai.Client
) -> None:
    request = _request(runtime, "rejected", base_model="not-a-gemini-model")
    job_id = derive_job_id(request)

    handle_tuning_request(request, runtime, client)

    job = wait_for(lambda: _finished(runtime, job_id), what="the job to fail")
    assert job["status"] == "JOB_STATE_FAILED"
    assert "400" in job["error"]
    assert "not-a-gemini-model" in job["error"]
    assert find_tuning_job(client, job_id) is None


def _trainer_pids(tuning_job_name: str) -> list[int]:
    """The local tuning service trains each job in a process named after the job's state dir."""
    job_number = tuning_job_name.rsplit("/", 1)[-1]
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "local.tuning.trainer" in cmdline and job_number in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_job_without_progress_raises_one_stalled_event(
    runtime: Runtime, client: genai.Client, subscribe: Subscribe
) -> None:
    events = subscribe(runtime.settings.job_events_topic)
    request = _request(runtime, "stalled", hyperparameters=Hyperparameters(epochs=100))
    request_lines = _examples("stalled", count=400)
    runtime.storage.bucket(runtime.settings.bucket).blob("prepared/stalled/train.jsonl").upload_from_string(
        request_lines
    )
    job_id = derive_job_id(request)
    handle_tuning_request(request, runtime, client)
    job = wait_for(
        lambda: (j := _job(runtime, job_id)) and j["status"] == "JOB_STATE_RUNNING" and j,
        timeout=JOB_TIMEOUT_S,
        what="the job to run",
    )
    pids = wait_for(lambda: _trainer_pids(job["tuning_job_name"]), what="the trainer process")
    for pid in pids:  # a real stall: the trainer stops making progress
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1)  # the service applies what the trainer wrote before it froze
        impatient = Runtime(Settings(stall_after_s=2))
        poll_tick(impatient, client)  # records the (frozen) progress marker
        time.sleep(3)
        for _ in range(3):  # past stall_after_s, three ticks in a row
            poll_tick(impatient, client)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        client.tunings.cancel(name=job["tuning_job_name"])

    def stalled() -> list[dict[str, Any]]:
        return [
            e["body"] for e in events() if e["body"]["job_id"] == job_id and e["body"]["kind"] == "stalled"
        ]

    [alert] = wait_for(stalled, what="the stalled event")
    time.sleep(2)
    assert len(stalled()) == 1
    assert alert["state"] == "JOB_STATE_RUNNING"
    assert alert["error"].startswith("no progress since")
    assert _job(runtime, job_id)["stalled_alerted_at"] is not None


# --- One bad job never stops the others -------------------------------------------------------
#: A jobs collection of the tests' own: the stack's poller and tuner (which tick and dispatch on
#: ``jobs`` concurrently) never touch it, so every claim and tick on it is the test's own call.
ISOLATED_JOBS = "jobs-isolated"


def _isolated(**overrides: Any) -> Runtime:
    return Runtime(Settings(jobs_collection=ISOLATED_JOBS, **overrides))


def _queue(store: JobStore, request: TuningRequestV1, job_id: str | None = None) -> str:
    job_id = job_id or derive_job_id(request)
    store.create_queued(job_id, orjson.loads(request.to_json()), request.dataset_id, request.base_model)
    time.sleep(0.01)  # a clear arrival order: claims take the oldest first
    return job_id


def _wait_until_the_tuning_service_is_idle(client: genai.Client) -> None:
    """A job an earlier test left running holds the service's one slot (a 429 for ours)."""
    wait_for(
        lambda: not any(not job.has_ended for job in client.tunings.list()),
        timeout=JOB_TIMEOUT_S,
        what="the tuning service to finish earlier jobs",
    )


def _add_unrecordable_job(store: JobStore, tuning_job_name: str, request: TuningRequestV1) -> str:
    """A job whose next transition cannot be committed: its next outbox entry already exists."""
    job_id = "unrecordable"
    _queue(store, request, job_id)
    store.touch(job_id, {"status": "JOB_STATE_QUEUED", "tuning_job_name": tuning_job_name})
    store.outbox.document(f"{job_id}-000001").set({"job_id": job_id, "sequence": 1, "published": True})
    return job_id


@pytest.mark.slow(20)
def test_a_malformed_or_unrecordable_job_does_not_stop_the_tick_for_the_others(
    runtime: Runtime, client: genai.Client, subscribe: Subscribe
) -> None:
    events = subscribe(runtime.settings.job_events_topic)
    isolated = _isolated(max_concurrent_jobs=10)
    store = JobStore(isolated.firestore, isolated.settings)
    job_ids = [_queue(store, _request(runtime, f"isolated{i}")) for i in range(2)]
    # Active, but not a JobRecord: no job_id, dataset_id, request or base_model.
    store.jobs.document("malformed").set({"status": "JOB_STATE_RUNNING", "tuning_job_name": "tuningJobs/1"})
    _wait_until_the_tuning_service_is_idle(client)

    summaries = [poll_tick(isolated, client)]  # submits the first job; the second waits for the slot
    first = _job(isolated, job_ids[0])
    assert first["status"] not in ("QUEUED", SUBMITTING), first
    _add_unrecordable_job(store, first["tuning_job_name"], _request(runtime, "unrecordable"))
    deadline = time.monotonic() + 3 * JOB_TIMEOUT_S
    while not all(_finished(isolated, job_id) for job_id in job_ids):
        assert time.monotonic() < deadline, "timed out waiting for both jobs to finish"
        time.sleep(1)
        summaries.append(poll_tick(isolated, client))

    assert [_job(isolated, job_id)["status"] for job_id in job_ids] == [SUCCEEDED] * 2
    assert summaries[0]["failed"] == 1
    assert {summary["failed"] for summary in summaries[1:]} == {2}
    assert _job(isolated, "unrecordable")["status"] == "JOB_STATE_QUEUED"

    def every_transition_published() -> bool:
        seen = {
            (e["body"]["job_id"], e["body"]["sequence"])
            for e in events()
            if e["body"]["kind"] == "transition"
        }
        expected = {(j, s) for j in job_ids for s in range(_job(isolated, j)["sequence"] + 1)}
        return expected <= seen

    wait_for(every_transition_published, what="every transition of both jobs to be published")


#: Ways the first of two claimed jobs can fail for good: (job id, changes to its request body,
#: text its error must hold).
#: A quote in the id breaks the label filter, so tunings.list answers 400 INVALID_ARGUMENT (as
#: Vertex answers any lookup it refuses); a stored body can fail validation; Vertex can reject
#: the tuning call itself.
PERMANENT_FAILURES = {
    "lookup": ('unlisted"job', {}, "unsupported filter"),
    "request": ("invalid-request", {"hyperparameters": {"epochs": 0}}, "validation error"),
    "tune": ("rejected-model", {"base_model": "not-a-gemini-model"}, "not-a-gemini-model"),
}


@pytest.mark.parametrize("failure", PERMANENT_FAILURES)
def test_a_claimed_job_that_fails_for_good_is_failed_and_the_next_one_still_submitted(
    runtime: Runtime, client: genai.Client, failure: str
) -> None:
    job_id, body_changes, message = PERMANENT_FAILURES[failure]
    isolated = _isolated(max_concurrent_jobs=2)
    store = JobStore(isolated.firestore, isolated.settings)
    request = _request(runtime, "doomed")
    body = {**orjson.loads(request.to_json()), **body_changes}
    store.create_queued(job_id, body, request.dataset_id, request.base_model)
    time.sleep(0.01)  # claimed first
    accepted = _queue(store, _request(runtime, f"accepted-{failure}"))  # a job id of its own
    _wait_until_the_tuning_service_is_idle(client)

    submitted = dispatch(isolated, client)

    assert submitted == [accepted]
    failed = _job(isolated, job_id)
    assert failed["status"] == "JOB_STATE_FAILED"
    assert message in failed["error"]
    job = _job(isolated, accepted)
    assert job["status"] not in ("QUEUED", SUBMITTING)
    with contextlib.suppress(genai_errors.ClientError):  # 400 if it has already finished
        client.tunings.cancel(name=job["tuning_job_name"])  # give the service's slot back


@pytest.mark.slow(16)
def test_an_unreachable_tuning_service_puts_the_claimed_job_back_and_claims_no_other(
    runtime: Runtime,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: every call is a connection error
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    isolated = _isolated(max_concurrent_jobs=2, tuning_api_url=f"http://127.0.0.1:{port}")
    unreachable = make_client(isolated.settings, retry_quota_errors=False)
    store = JobStore(isolated.firestore, isolated.settings)
    job_ids = [_queue(store, _request(runtime, f"unreachable{i}")) for i in range(2)]

    with pytest.raises(TransientError):
        dispatch(isolated, unreachable)

    # A transient failure ends the round: the claimed job is back, the next one never left the queue.
    first, second = (_job(isolated, job_id) for job_id in job_ids)
    assert (first["status"], first["submit_lease"]) == ("QUEUED", None)
    assert first["requeue_reason"].startswith("transient")
    assert (second["status"], second.get("submit_owner"), "requeue_reason" in second) == (
        "QUEUED",
        None,
        False,
    )
    for job_id in job_ids:
        assert store.outbox.document(f"{job_id}-000000").get().get("published") is True


def test_a_holder_whose_lease_expired_cannot_undo_the_next_claim(runtime: Runtime) -> None:
    isolated = _isolated()
    store = JobStore(isolated.firestore, isolated.settings)
    job_id = _queue(store, _request(runtime, "owner"))
    [first] = store.claim_for_submission(lambda active: 1)
    # The first holder hangs past its lease; the next dispatch takes the claim over.
    store.jobs.document(job_id).update({"submit_lease": datetime.now(UTC) - timedelta(seconds=1)})
    [second] = store.claim_for_submission(lambda active: 1)
    assert second.job_id == job_id
    assert second.submit_owner not in (None, first.submit_owner)

    # The first holder comes back with a 429, then with a 400: neither touches the new claim.
    store.release_to_queue(job_id, "late 429", owner=first.submit_owner)
    late_failure = store.record_transition(
        job_id,
        "JOB_STATE_FAILED",
        fields={"error": "late 400"},
        allow_from=[SUBMITTING],
        submit_owner=first.submit_owner,
    )
    assert late_failure is None
    document = store.jobs.document(job_id).get().to_dict()
    assert (document["status"], document["submit_owner"]) == (SUBMITTING, second.submit_owner)

    store.release_to_queue(job_id, "429", owner=second.submit_owner)
    assert store.jobs.document(job_id).get().to_dict()["status"] == QUEUED


def test_a_malformed_queued_document_is_failed_and_the_queue_moves_on(runtime: Runtime) -> None:
    isolated = _isolated()
    store = JobStore(isolated.firestore, isolated.settings)
    store.jobs.document("hand-edited").set(
        {"status": QUEUED, "queued_at": datetime.now(UTC) - timedelta(hours=1), "request": "not a dict"}
    )
    job_id = _queue(store, _request(runtime, "after-malformed"))

    claimed = store.claim_for_submission(lambda active: 1)  # one slot, taken by the malformed head

    assert claimed == []  # the head was failed instead of claimed (before: the claim raised, every time)
    malformed = store.jobs.document("hand-edited").get().to_dict()
    assert malformed["status"] == "JOB_STATE_FAILED"
    assert malformed["error"].startswith("malformed job document, not submitted:")
    assert [job.job_id for job in store.claim_for_submission(lambda active: 1)] == [job_id]
