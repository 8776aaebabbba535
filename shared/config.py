"""The one settings object, read from the environment.

Every field is an environment variable named ``SFTPIPE_<FIELD>`` (upper case) unless it has an
explicit alias (the emulator hosts and the project use the names Google's client libraries read).
README.md has one row per variable; ``tests/unit/test_config.py`` fails when a field is missing
from that table.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Dollars per million billable training tokens (dataset tokens x epochs), by base model.
#: Published Vertex AI supervised-tuning prices; override with SFTPIPE_TRAINING_PRICE_PER_M_TOKENS.
DEFAULT_TRAINING_PRICES: dict[str, float] = {
    "gemini-2.5-pro": 25.0,
    "gemini-2.5-flash": 5.0,
    "gemini-2.5-flash-lite": 1.5,
    "gemini-2.0-flash-001": 3.0,
    "gemini-2.0-flash-lite-001": 1.0,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SFTPIPE_",
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
    )

    # --- Google Cloud -------------------------------------------------------------------------
    project: str = Field(
        "local-project",
        validation_alias=AliasChoices("SFTPIPE_PROJECT", "GOOGLE_CLOUD_PROJECT"),
        description="Google Cloud project id (falls back to GOOGLE_CLOUD_PROJECT).",
    )
    location: str = Field("us-central1", description="Vertex AI region for tuning jobs.")
    bucket: str = Field("sftpipe-local", description="Bucket that receives uploads and outputs.")

    # --- Object layout ------------------------------------------------------------------------
    incoming_prefix: str = Field("incoming/", description="Uploads under this prefix start a run.")
    prepared_prefix: str = Field("prepared/", description="Where ingest writes prepared datasets.")
    reports_prefix: str = Field("reports/", description="Where completion writes reports.")
    upload_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["datasets/"],
        description="Comma-separated prefixes of the bucket under which a manifest may name files.",
    )
    allowed_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated other buckets whose objects a manifest may name (empty: none).",
    )

    # --- Pub/Sub ------------------------------------------------------------------------------
    uploads_topic: str = Field(
        "object-finalized",
        description="Topic that receives GCS upload notifications (local stack / notification mode).",
    )
    tuning_requests_topic: str = Field("tuning-requests", description="tuning-request/v1 topic.")
    job_events_topic: str = Field("job-events", description="job-event/v1 topic (one per transition).")
    poll_ticks_topic: str = Field("poll-ticks", description="poll-tick/v1 topic (Cloud Scheduler).")
    dead_letter_suffix: str = Field(
        "-dead-letter", description="Suffix of each subscription's dead-letter topic."
    )

    # --- Firestore ----------------------------------------------------------------------------
    datasets_collection: str = Field("datasets", description="Firestore collection of datasets.")
    jobs_collection: str = Field("jobs", description="Firestore collection of tuning jobs.")
    evaluations_collection: str = Field("evaluations", description="Firestore collection of evaluations.")
    baselines_collection: str = Field(
        "baselines", description="Firestore collection of the base model's pre-tuning baselines."
    )
    idempotency_collection: str = Field(
        "idempotency", description="Firestore collection of idempotency claims."
    )
    idempotency_lease_s: int = Field(
        60,
        ge=1,
        description="Seconds a claim (ingest, completion, evaluation, baseline, a job's submission) holds without its heartbeat before another attempt may take it over; the heartbeat renews it every 15 s, or every quarter of a shorter lease.",
    )

    function_timeout_s: int = Field(
        540,
        ge=60,
        le=3600,
        description="Seconds the platform lets one invocation of this function run (deploy/ sets each function's own); work is sized to end inside it.",
    )

    # --- Events -------------------------------------------------------------------------------
    max_event_age_s: int = Field(
        86_400,
        ge=1,
        description="Events older than this are dropped (logged), so a poisoned event cannot retry for days.",
    )

    # --- Tuning -------------------------------------------------------------------------------
    max_concurrent_jobs: int = Field(1, ge=1, description="Tuning jobs allowed to run at once.")
    poll_concurrency: int = Field(
        8, ge=1, le=64, description="Tuning jobs the poller reads from Vertex at once."
    )
    stall_after_s: int = Field(
        7200, ge=1, description="Seconds without progress before the poller raises a stalled alert event."
    )
    tuning_description: str = Field(
        "", max_length=1024, description="Description of every tuning job (an upload's description wins)."
    )
    tuning_output_uri: str = Field(
        "",
        pattern=r"^(gs://[a-z0-9][a-z0-9._-]{1,220}/.+)?$",
        description="gs://BUCKET/PREFIX where Vertex AI writes each tuning job's artifacts (empty: Vertex's default).",
    )
    tuning_kms_key_name: str = Field(
        "",
        pattern=r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)?$",
        description="Customer-managed key (CMEK) for every tuning job and tuned model, in SFTPIPE_LOCATION (empty: Google-managed).",
    )
    tuning_service_account: str = Field(
        "",
        pattern=r"^([^@\s]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.gserviceaccount\.com)?$",
        description="Service account every tuning job runs as (empty: Vertex AI's service agent); it must read the datasets.",
    )
    waiting_notice_after_s: int = Field(
        1800,
        ge=1,
        description="Seconds a job may wait for quota or capacity (TUNING_JOB_STATE_WAITING_FOR_QUOTA / _CAPACITY) before the poller raises one notice.",
    )
    base_model: str = Field("gemini-2.5-flash", description="Default base model for uploads.")
    model_limits: str = Field(
        "",
        description="YAML or JSON file (a path or gs://bucket/object) of base-model rows that extend or correct the shipped table (shared/datasets/models.yaml); read on first use and cached; empty: the shipped table only.",
    )
    epochs: int | None = Field(None, ge=1, le=100, description="Default epoch count (empty: recommended).")
    learning_rate_multiplier: float | None = Field(
        None, gt=0, le=100, description="Default learning-rate multiplier (empty: recommended)."
    )
    adapter_size: int | None = Field(None, description="Default adapter size (empty: recommended).")
    tuning_api_url: str = Field(
        "",
        description="Base URL of a Vertex-compatible tuning API (the local tuning service); empty: Vertex AI.",
    )
    tuning_api_token: str = Field(
        "local", description="Bearer token sent to tuning_api_url (ignored for Vertex AI)."
    )
    thinking_budget: int = Field(
        0,
        ge=0,
        description="Thinking budget when querying thinking models (0: off where the model allows it; 2.5 Pro gets at least 128); added on top of the answer's output budget.",
    )

    # --- Evaluation (completion) ---------------------------------------------------------------
    baseline_before_tuning: bool = Field(
        True,
        description="Score the base model on the test split before the tuning job is created (its answers are reused by the final evaluation; a request's baseline_gate can stop the run).",
    )
    evaluation_time_budget_s: float = Field(
        480,
        gt=0,
        description="Seconds one completion invocation evaluates before it checkpoints and continues in a new one.",
    )
    evaluation_chunk_size: int = Field(
        100, ge=1, description="Test examples per checkpointed chunk of an evaluation."
    )
    evaluation_concurrency: int = Field(
        8, ge=1, description="Model calls in flight at once during evaluation."
    )
    evaluation_rpm: int = Field(
        600, ge=1, description="Model calls per minute during evaluation (base and tuned together)."
    )
    evaluation_max_output_tokens: int = Field(
        1024,
        ge=1,
        description="Ceiling of the answer's output tokens per evaluation call (base and tuned alike); each run asks for twice its longest reference + 16, at most this, plus the thinking budget for a model that thinks.",
    )
    evaluation_temperature: float = Field(
        0.0, ge=0, le=2, description="Temperature of each evaluation call (base and tuned alike)."
    )
    evaluation_request_timeout_s: float = Field(
        120,
        gt=0,
        description="Seconds one evaluation call may take, retries included, before it counts as failed.",
    )

    judge_model: str | None = Field(
        None,
        description="Judge model of the model-based metrics (win rate, rubric scores); unset: gemini-2.5-flash on Vertex AI, the job's base model on the local tuning service (a noisy stand-in); empty: no judge.",
    )
    checkpoint_max_examples: int = Field(
        100,
        ge=0,
        description="Validation examples each checkpoint endpoint is asked before the test split, to choose the best checkpoint (0: the tuned model as Vertex serves it); each costs one call per checkpoint.",
    )
    champion_max_examples: int = Field(
        200,
        ge=0,
        description="Test examples the champion (the newest earlier tuned model of the same lineage) is asked to compare with the new model (0: no comparison); one call each.",
    )
    judge_max_examples: int = Field(
        200,
        ge=0,
        description="Test examples the judge sees (the first ones; 0: no judge); each costs 2 pairwise calls + 2 per rubric criterion.",
    )

    # --- Datasets -----------------------------------------------------------------------------
    skip_invalid: bool = Field(False, description="Skip invalid records instead of rejecting the file.")
    split_seed: int = Field(42, description="Seed of the deterministic train/validation/test split.")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Share of examples for validation.")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of examples held out for evaluation.")
    training_price_per_m_tokens: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TRAINING_PRICES),
        description="JSON object: base model -> dollars per million billable training tokens.",
    )

    # --- Notifications ------------------------------------------------------------------------
    slack_webhook_url: str = Field("", description="Slack incoming webhook URL (secret).")
    slack_bot_token: str = Field("", description="Slack bot token, used with slack_channel (secret).")
    slack_channel: str = Field("", description="Slack channel for the bot token.")
    smtp_host: str = Field("", description="SMTP server; empty disables email.")
    smtp_port: int = Field(587, description="SMTP port.")
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str = Field("", description="SMTP user name.")
    smtp_password: str = Field("", description="SMTP password (secret).")
    mail_from: str = Field("sftpipe@localhost", description="Sender address of notification mails.")
    mail_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated recipients of notification mails."
    )
    notify_email_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated mail domains an upload may send its result to (empty: none).",
    )
    notify_slack_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Slack channels an upload may post its result to (empty: none).",
    )

    # --- Emulators (read by the Google client libraries themselves) ---------------------------
    pubsub_emulator_host: str = Field(
        "",
        validation_alias="PUBSUB_EMULATOR_HOST",
        description="host:port of the Pub/Sub emulator.",
    )
    firestore_emulator_host: str = Field(
        "",
        validation_alias="FIRESTORE_EMULATOR_HOST",
        description="host:port of the Firestore emulator.",
    )
    storage_emulator_host: str = Field(
        "", validation_alias="STORAGE_EMULATOR_HOST", description="URL of fake-gcs-server."
    )

    # --- Logging ------------------------------------------------------------------------------
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")

    @field_validator(
        "mail_to",
        "upload_prefixes",
        "allowed_buckets",
        "notify_email_domains",
        "notify_slack_channels",
        mode="before",
    )
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("incoming_prefix", "prepared_prefix", "reports_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    @property
    def uses_emulators(self) -> bool:
        return bool(self.pubsub_emulator_host or self.firestore_emulator_host or self.storage_emulator_host)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once (functions reuse them across invocations)."""
    return Settings()
