"""A create is never made twice: faults between the tuner and the tuning service, injected by a
proxy in front of the real local tuning service (tests/integration/faultproxy.py).

Each test counts what matters: tuning jobs carrying the job's label at the service, creates
that reached it, and what Firestore recorded. Jobs live in a collection of the tests' own, so
the stack's tuner and poller never race these calls.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google import genai
from google.cloud.firestore_v1.base_query import FieldFilter
from google.genai import errors as genai_errors
from google.genai import types

from shared.config import Settings
from shared.errors import TransientError
from shared.runtime import Runtime
from shared.state.jobs import QUEUED, SUBMITTING
from shared.state.store import JobStore
from shared.tuning import submit as submit_module
from shared.tuning.client import make_client
from shared.tuning.submit import JOB_ID_LABEL, dispatch, record_submitted
from tests.integration.faultproxy import FaultPlan, FaultProxy
from tests.integration.test_tuner_poller import (
    _job,
    _queue,
    _request,
    _service_jobs,
    _wait_until_the_tuning_service_is_idle,
)

FAULT_JOBS = "jobs-faults"


@pytest.fixture
def service(runtime: Runtime) -> Iterator[genai.Client]:
    """A client straight to the tuning service (for counting), idle before and after the test."""
    client = make_client(runtime.settings, retry_quota_errors=False)
    _wait_until_the_tuning_service_is_idle(client)
    yield client
    for job in client.tunings.list():
        if not job.has_ended:
            with contextlib.suppress(genai_errors.ClientError):
                client.tunings.cancel(name=job.name)


def _through(proxy: FaultProxy) -> tuple[Runtime, genai.Client]:
    runtime = Runtime(Settings(jobs_collection=FAULT_JOBS, tuning_api_url=proxy.url))
    return runtime, runtime.tuning  # the tuner's own client: read retries on, bounded timeouts


def _upstream() -> str:
    return os.environ["SFTPIPE_TUNING_API_URL"]


def test_a_create_the_service_performs_but_answers_502_makes_one_job_recorded(
    runtime: Runtime, service: genai.Client
) -> None:
    with FaultProxy(_upstream(), FaultPlan("502_after_create")) as proxy:
        faulty, client = _through(proxy)
        store = JobStore(faulty.firestore, faulty.settings)
        job_id = _queue(store, _request(runtime, "bad-gateway"))

        submitted = dispatch(faulty, client, store)

    [tuning_job] = _service_jobs(service, job_id)
    assert proxy.creates_forwarded == 1
    assert submitted == [job_id]
    recorded = _job(faulty, job_id)
    assert recorded["tuning_job_name"] == tuning_job.name
    assert recorded["status"] not in (QUEUED, SUBMITTING)


def test_a_create_answered_after_the_clients_timeout_makes_one_job_recorded(
    runtime: Runtime, service: genai.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_module, "CREATE_TIMEOUT_S", 3.0)
    with FaultProxy(_upstream(), FaultPlan("answer_late", delay_s=8.0)) as proxy:
        faulty, client = _through(proxy)
        store = JobStore(faulty.firestore, faulty.settings)
        job_id = _queue(store, _request(runtime, "slow-answer"))

        submitted = dispatch(faulty, client, store)
        again = dispatch(faulty, client, store)  # a redelivery of the request finds nothing to do

    assert proxy.creates_forwarded == 1
    assert (submitted, again) == ([job_id], [])
    [tuning_job] = _service_jobs(service, job_id)
    assert _job(faulty, job_id)["tuning_job_name"] == tuning_job.name


def test_a_create_that_reaches_the_service_late_is_not_made_again_before_it_settles(
    runtime: Runtime, service: genai.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_module, "CREATE_TIMEOUT_S", 3.0)
    with FaultProxy(_upstream(), FaultPlan("request_late", delay_s=8.0)) as proxy:
        faulty, client = _through(proxy)
        store = JobStore(faulty.firestore, faulty.settings)
        job_id = _queue(store, _request(runtime, "late-request"))

        # The create times out, the lookup after it finds nothing yet: unclear, back in the queue.
        with pytest.raises(TransientError):
            dispatch(faulty, client, store)
        unclear = _job(faulty, job_id)
        assert (unclear["status"], unclear["create_unclear_at"] is not None) == (QUEUED, True)
        # The redelivery comes before the request reached the service: no second create.
        with pytest.raises(TransientError, match="no second create"):
            dispatch(faulty, client, store)
        deadline = time.monotonic() + 30
        while not _service_jobs(service, job_id):  # the held request reaches the service
            assert time.monotonic() < deadline, "the late create never reached the service"
            time.sleep(0.5)

        submitted = dispatch(faulty, client, store)  # finds it by its label and records it

    assert proxy.creates_forwarded == 1
    assert submitted == [job_id]
    [tuning_job] = _service_jobs(service, job_id)
    assert _job(faulty, job_id)["tuning_job_name"] == tuning_job.name


@pytest.mark.slow(15)
def test_a_late_answer_to_an_expired_claim_does_not_overwrite_the_later_holders_record(
    runtime: Runtime, service: genai.Client
) -> None:
    isolated = Runtime(Settings(jobs_collection=FAULT_JOBS))
    store = JobStore(isolated.firestore, isolated.settings)
    request = _request(runtime, "late-holder")
    job_id = _queue(store, request)
    [first] = store.claim_for_submission(lambda active: 1)
    store.jobs.document(job_id).update({"submit_lease": datetime.now(UTC) - timedelta(seconds=1)})
    [second] = store.claim_for_submission(lambda active: 1)

    def create() -> types.TuningJob:  # as a holder's create reaches the service
        return service.tunings.tune(
            base_model=request.base_model,
            training_dataset=types.TuningDataset(gcs_uri=request.training_uri),
            config=types.CreateTuningJobConfig(epoch_count=1, labels={JOB_ID_LABEL: job_id}),
        )

    kept = create()
    assert record_submitted(store, second, kept, service) is not None
    _wait_until_the_tuning_service_is_idle(service)  # the service's one slot, for the late create
    late = create()  # the first holder's create, answered after its claim was taken over

    assert record_submitted(store, first, late, service) is None

    recorded = _job(isolated, job_id)
    assert recorded["tuning_job_name"] == kept.name
    assert recorded["submit_owner"] == second.submit_owner
    states = {job.name: job.state for job in _service_jobs(service, job_id)}
    assert states[late.name] in (types.JobState.JOB_STATE_CANCELLING, types.JobState.JOB_STATE_CANCELLED)
    assert states[kept.name] == types.JobState.JOB_STATE_SUCCEEDED


@pytest.mark.slow(18)
def test_a_job_found_already_finished_on_recovery_is_recorded_as_the_poller_would(
    runtime: Runtime, service: genai.Client
) -> None:
    isolated = Runtime(Settings(jobs_collection=FAULT_JOBS))
    store = JobStore(isolated.firestore, isolated.settings)
    request = _request(runtime, "finished-before-recorded")
    job_id = _queue(store, request)
    # The tuner that created it died before recording it, and the job ran to its end meanwhile.
    created = service.tunings.tune(
        base_model=request.base_model,
        training_dataset=types.TuningDataset(gcs_uri=request.training_uri),
        config=types.CreateTuningJobConfig(epoch_count=1, labels={JOB_ID_LABEL: job_id}),
    )
    _wait_until_the_tuning_service_is_idle(service)
    finished = service.tunings.get(name=created.name)
    assert finished.state == types.JobState.JOB_STATE_SUCCEEDED

    assert dispatch(isolated, isolated.tuning, store) == [job_id]

    job = _job(isolated, job_id)
    assert job["status"] == "JOB_STATE_SUCCEEDED"
    assert job["tuning_job_name"] == created.name
    assert job["tuned_endpoint"] == finished.tuned_model.endpoint
    assert job["tuned_model"] == finished.tuned_model.model
    assert len(job["checkpoints"]) == len(finished.tuned_model.checkpoints or []) >= 1
    [event] = [
        doc.to_dict()["event"]
        for doc in store.outbox.where(filter=FieldFilter("job_id", "==", job_id)).stream()
        if doc.to_dict()["sequence"] == 1
    ]
    assert (event["terminal"], event["tuned_endpoint"]) == (True, finished.tuned_model.endpoint)
    assert len(_service_jobs(service, job_id)) == 1
