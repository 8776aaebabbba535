"""The HTTP face of the local tuning service: Vertex AI v1 paths and JSON shapes (a subset).

Endpoints (``/v1`` and ``/v1beta1`` alike; ``P``/``L`` are project and location)::

    GET  /healthz                                              200 once requests are accepted
    POST /v1/projects/P/locations/L/tuningJobs                 create (400 / 429 like Vertex)
    GET  /v1/projects/P/locations/L/tuningJobs                 list: pageSize, pageToken, filter
    GET  /v1/projects/P/locations/L/tuningJobs/ID              get
    POST /v1/projects/P/locations/L/tuningJobs/ID:cancel       cancel
    GET  /v1/projects/P/locations/L/metadataStores/default/contexts/CTX     a job's experiment
    GET  /v1/projects/P/locations/L/tensorboards/local[/experiments/E[/runs[/R[/timeSeries]]]]
    GET  /v1/.../tensorboards/local/experiments/E/runs/R/timeSeries/S:read  one metric series
    GET  /v1/projects/P/locations/L/tensorboards/local:batchRead?timeSeries=NAME&...
    POST /v1/projects/P/locations/L/endpoints/ID:generateContent       tuned model or checkpoint
    POST /v1/projects/P/locations/L/endpoints/ID:countTokens
    POST /v1/projects/P/locations/L/publishers/google/models/NAME:generateContent   base model
    POST /v1/projects/P/locations/L/publishers/google/models/NAME:countTokens
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from local.tuning import experiments, models, wire
from local.tuning.errors import ApiError
from local.tuning.generation import Generator
from local.tuning.jobs import JobStore, parse_filter

log = logging.getLogger("local.tuning")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PREFIX = "/<any(v1, v1beta1):version>/projects/<project>/locations/<location>"


def create_app(
    store: JobStore,
    generator: Generator,
    project: str | None = None,
    location: str | None = None,
) -> Flask:
    app = Flask("local.tuning")

    def parent_of(project_id: str, location_id: str) -> str:
        if (project and project_id != project) or (location and location_id != location):
            raise ApiError.not_found(
                f"projects/{project_id}/locations/{location_id} is not served here "
                f"(this service serves projects/{project or '*'}/locations/{location or '*'})"
            )
        return f"projects/{project_id}/locations/{location_id}"

    def job_of(project_id: str, location_id: str, job_id: str) -> dict[str, Any]:
        parent = parent_of(project_id, location_id)
        job = store.get(job_id)
        if not job["name"].startswith(parent + "/"):
            raise ApiError.not_found(f"tuning job {job_id} not found in {parent}")
        return job

    def json_body() -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError.invalid_argument("the request body must be a JSON object")
        return body

    @app.after_request
    def enum_encoding(response: Response) -> Response:
        # GAPIC clients ask for integer enums ($alt=json;enum-encoding=int): answer in kind.
        if response.is_json and wire.wants_int_enums(request.args.get("$alt")):
            response.set_data(json.dumps(wire.encode_response(response.get_json()), allow_nan=False))
        return response

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify(exc.body()), exc.http_code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        status = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(code, "INVALID_ARGUMENT")
        return jsonify(ApiError(code, status, f"{request.method} {request.path}: {exc.name}").body()), code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(ApiError(500, "INTERNAL", f"{type(exc).__name__}: {exc}").body()), 500

    @app.get("/healthz")
    def healthz() -> Response:
        spec = models.LOCAL_MODELS[store.local_model]
        return jsonify(
            {
                "status": "ok",
                "model": store.local_model,
                # What answers for every gemini-* name here: reports say so (shared.tuning.backend).
                "modelDisplayName": spec.display_name,
                "modelDescription": spec.description,
                "activeJobs": store.active_count(),
            }
        )

    @app.post(f"{PREFIX}/tuningJobs")
    def create_job(version: str, project: str, location: str) -> Response:
        job = store.create(parent_of(project, location), wire.create_body(json_body()))
        log.info("created %s (%s as %s)", job["name"], job["baseModel"], store.local_model)
        return jsonify(job)

    @app.get(f"{PREFIX}/tuningJobs")
    def list_jobs(version: str, project: str, location: str) -> Response:
        parent = parent_of(project, location)
        page_size = min(int(request.args.get("pageSize") or DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
        if page_size < 1:
            page_size = DEFAULT_PAGE_SIZE
        offset = _decode_page_token(request.args.get("pageToken", ""))
        jobs = store.list(parent, parse_filter(request.args.get("filter", "")))
        page = jobs[offset : offset + page_size]
        answer: dict[str, Any] = {"tuningJobs": page}
        if offset + page_size < len(jobs):
            answer["nextPageToken"] = _encode_page_token(offset + page_size)
        return jsonify(answer)

    @app.get(f"{PREFIX}/tuningJobs/<job_id>")
    def get_job(version: str, project: str, location: str, job_id: str) -> Response:
        return jsonify(job_of(project, location, job_id))

    @app.post(f"{PREFIX}/tuningJobs/<job_id>:cancel")
    def cancel_job(version: str, project: str, location: str, job_id: str) -> Response:
        job_of(project, location, job_id)
        store.cancel(job_id)
        log.info("cancel requested for tuning job %s", job_id)
        return jsonify({})

    # --- The job's experiment: metadata context and TensorBoard (local/tuning/experiments.py) --

    def experiment_job(project_id: str, location_id: str, experiment: str) -> tuple[str, dict[str, Any]]:
        job_id = experiments.job_id_of(experiment)
        try:
            return parent_of(project_id, location_id), job_of(project_id, location_id, job_id)
        except ApiError as exc:
            if exc.http_code == 404:
                raise ApiError.not_found(f"experiment {experiment} not found") from None
            raise

    def job_series(job: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return store.metrics(job["name"].rsplit("/", 1)[-1])["series"]

    def run_of(
        project_id: str, location_id: str, tensorboard: str, experiment: str, run: str
    ) -> tuple[str, dict[str, Any]]:
        experiments.check_tensorboard(tensorboard)
        parent, job = experiment_job(project_id, location_id, experiment)
        if run != job["name"].rsplit("/", 1)[-1]:
            raise ApiError.not_found(f"run {run} not found in experiment {experiment}")
        return parent, job

    @app.get(f"{PREFIX}/metadataStores/<store_id>/contexts/<context_id>")
    def get_context(version: str, project: str, location: str, store_id: str, context_id: str) -> Response:
        experiments.check_store(store_id)
        parent, job = experiment_job(project, location, context_id)
        return jsonify(experiments.context(parent, job))

    @app.get(f"{PREFIX}/tensorboards/<tensorboard>")
    def get_tensorboard(version: str, project: str, location: str, tensorboard: str) -> Response:
        experiments.check_tensorboard(tensorboard)
        return jsonify(experiments.tensorboard(parent_of(project, location), store.started_at))

    @app.get(f"{PREFIX}/tensorboards/<tensorboard>/experiments/<experiment>")
    def get_tensorboard_experiment(
        version: str, project: str, location: str, tensorboard: str, experiment: str
    ) -> Response:
        experiments.check_tensorboard(tensorboard)
        parent, job = experiment_job(project, location, experiment)
        return jsonify(experiments.tensorboard_experiment(parent, job))

    @app.get(f"{PREFIX}/tensorboards/<tensorboard>/experiments/<experiment>/runs")
    def list_runs(version: str, project: str, location: str, tensorboard: str, experiment: str) -> Response:
        experiments.check_tensorboard(tensorboard)
        parent, job = experiment_job(project, location, experiment)
        return jsonify({"tensorboardRuns": [experiments.run(parent, job)]})

    @app.get(f"{PREFIX}/tensorboards/<tensorboard>/experiments/<experiment>/runs/<run>")
    def get_run(
        *, version: str, project: str, location: str, tensorboard: str, experiment: str, run: str
    ) -> Response:
        parent, job = run_of(project, location, tensorboard, experiment, run)
        return jsonify(experiments.run(parent, job))

    @app.get(f"{PREFIX}/tensorboards/<tensorboard>/experiments/<experiment>/runs/<run>/timeSeries")
    def list_time_series(
        *, version: str, project: str, location: str, tensorboard: str, experiment: str, run: str
    ) -> Response:
        parent, job = run_of(project, location, tensorboard, experiment, run)
        return jsonify({"tensorboardTimeSeries": experiments.time_series(parent, job, job_series(job))})

    def series_data(job: dict[str, Any], series: str) -> dict[str, Any]:
        recorded = job_series(job)
        metric = experiments.metric_of(series)
        if metric not in recorded:
            raise ApiError.not_found(f"time series {series} not found")
        return experiments.time_series_data(metric, recorded[metric], job["createTime"])

    @app.get(
        f"{PREFIX}/tensorboards/<tensorboard>/experiments/<experiment>/runs/<run>/timeSeries/<series>:read"
    )
    def read_time_series(
        *, version: str, project: str, location: str, tensorboard: str, experiment: str, run: str, series: str
    ) -> Response:
        _, job = run_of(project, location, tensorboard, experiment, run)
        return jsonify({"timeSeriesData": series_data(job, series)})

    @app.get(f"{PREFIX}/tensorboards/<tensorboard>:batchRead")
    def batch_read_time_series(version: str, project: str, location: str, tensorboard: str) -> Response:
        experiments.check_tensorboard(tensorboard)
        prefix = f"{experiments.tensorboard_name(parent_of(project, location))}/experiments/"
        answers = []
        for name in request.args.getlist("timeSeries") or request.args.getlist("time_series"):
            experiment, _, rest = name.removeprefix(prefix).partition("/runs/")
            run, _, series = rest.partition("/timeSeries/")
            if not name.startswith(prefix) or not series:
                raise ApiError.invalid_argument(f"{name!r} is not a time series of {prefix.rstrip('/')}")
            _, job = run_of(project, location, tensorboard, experiment, run)
            answers.append(series_data(job, series))
        if not answers:
            raise ApiError.invalid_argument("timeSeries: name at least one time series to read")
        return jsonify({"timeSeriesData": answers})

    def endpoint_target(project_id: str, location_id: str, endpoint_id: str) -> tuple[Path | None, Path, str]:
        parent = parent_of(project_id, location_id)
        job, adapter_dir = store.resolve_endpoint(endpoint_id)
        if not job["name"].startswith(parent + "/"):
            raise ApiError.not_found(f"endpoint {endpoint_id} not found in {parent}")
        base_dir = (
            store.job_dir(job["name"].rsplit("/", 1)[-1]) / "base" if store.local_model == "tiny" else None
        )
        return base_dir, adapter_dir, job["tunedModel"]["model"]

    @app.post(f"{PREFIX}/endpoints/<endpoint_id>:generateContent")
    def endpoint_generate(version: str, project: str, location: str, endpoint_id: str) -> Response:
        body = json_body()
        base_dir, adapter_dir, model_name = endpoint_target(project, location, endpoint_id)
        return jsonify(generator.generate(body, model_name, base_dir, adapter_dir))

    @app.post(f"{PREFIX}/endpoints/<endpoint_id>:countTokens")
    def endpoint_count(version: str, project: str, location: str, endpoint_id: str) -> Response:
        body = json_body()
        base_dir, _, _ = endpoint_target(project, location, endpoint_id)
        return jsonify(generator.count_tokens(body, base_dir))

    def base_model_name(project_id: str, location_id: str, model: str) -> str:
        parent_of(project_id, location_id)
        if not models.is_known_serving_model(model, store.local_model):
            raise ApiError.not_found(
                f"Publisher model publishers/google/models/{model} not found; this service serves "
                f"gemini-* and {store.local_model} with its local model"
            )
        return model

    @app.post(f"{PREFIX}/publishers/google/models/<model>:generateContent")
    def base_generate(version: str, project: str, location: str, model: str) -> Response:
        body = json_body()
        return jsonify(generator.generate(body, base_model_name(project, location, model), None, None))

    @app.post(f"{PREFIX}/publishers/google/models/<model>:countTokens")
    def base_count(version: str, project: str, location: str, model: str) -> Response:
        body = json_body()
        base_model_name(project, location, model)
        return jsonify(generator.count_tokens(body, None))

    return app


def _encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind != "offset":
            raise ValueError(kind)
        return max(int(value), 0)
    except (ValueError, UnicodeDecodeError):
        raise ApiError.invalid_argument(f"invalid pageToken {token!r}") from None
