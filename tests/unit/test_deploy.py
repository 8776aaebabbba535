"""deploy/ against the code: every .tf parses, and Terraform names what the code names.

No cloud account and no terraform binary: python-hcl2 parses the files and the assertions
compare what it finds with ``main.__all__``, ``shared.config.Settings`` and the message schemas.
checkov runs separately (``make deploy-check``) because of its pinned dependencies.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

import main
import shared.idempotency
from shared.config import Settings
from shared.datasets.limits import MALLOC_MMAP_THRESHOLD_BYTES
from shared.dead_letter import dead_letter_topic
from shared.events import PubSubMessage
from shared.ingest.manifest import ReadPolicy
from shared.messages import PollTickV1, parse_message

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TF_FILES = sorted(DEPLOY.glob("*.tf"))

#: Which topic setting feeds which function (architecture.md); ingest is fed by the bucket.
ROUTES = {"tuner": "tuning_requests_topic", "poller": "poll_ticks_topic", "completion": "job_events_topic"}
#: Settings every function needs to find what it touches.
REQUIRED_ENV = {
    "SFTPIPE_PROJECT",
    "SFTPIPE_LOCATION",
    "SFTPIPE_BUCKET",
    "SFTPIPE_INCOMING_PREFIX",
    "SFTPIPE_PREPARED_PREFIX",
    "SFTPIPE_REPORTS_PREFIX",
    "SFTPIPE_TUNING_REQUESTS_TOPIC",
    "SFTPIPE_JOB_EVENTS_TOPIC",
    "SFTPIPE_POLL_TICKS_TOPIC",
    "SFTPIPE_DEAD_LETTER_SUFFIX",
    "SFTPIPE_DATASETS_COLLECTION",
    "SFTPIPE_JOBS_COLLECTION",
    "SFTPIPE_EVALUATIONS_COLLECTION",
    "SFTPIPE_IDEMPOTENCY_COLLECTION",
}
#: Settings that are secrets: mounted from Secret Manager, never plain environment.
SECRET_FIELDS = {"slack_webhook_url", "slack_bot_token", "smtp_password"}
#: Variables named like a Settings field whose default differs on purpose.
DEFAULTS_THAT_DIFFER = {"bucket": "derived from the project id: bucket names are global"}

EXPR = re.compile(r"^\$\{(.*)\}$", re.DOTALL)
VAR_TEMPLATE = re.compile(r"\$\{var\.(\w+)\}")


# --- Reading the configuration -----------------------------------------------------------------


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals: '"abc"' -> 'abc'; expressions stay."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:  # a template with quoted expressions inside: ${f("_")}
            return value[1:-1]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def expression(value: Any) -> str | None:
    """'${var.x}' -> 'var.x'; None for literals."""
    match = EXPR.match(value) if isinstance(value, str) else None
    return match.group(1).strip() if match else None


class Config:
    def __init__(self, files: list[Path]) -> None:
        self.variables: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.raw_resources: dict[tuple[str, str], dict[str, Any]] = {}
        for path in files:
            with path.open() as handle:
                doc = hcl2.load(handle)
            for block in doc.get("variable", []):
                for name, body in block.items():
                    self.variables[unquote(name)] = body
            for block in doc.get("locals", []):
                self.locals.update({k: v for k, v in block.items() if not k.startswith("__")})
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        key = (unquote(rtype), unquote(rname))
                        self.raw_resources[key] = body
                        self.resources[key] = unquote(body)

    def default(self, variable: str) -> Any:
        assert variable in self.variables, f"variable {variable!r} is not declared in deploy/"
        assert "default" in self.variables[variable], f"variable {variable!r} has no default"
        return unquote(self.variables[variable]["default"])

    def render(self, template: str) -> str:
        """Substitute ${var.x} with x's default; anything else left would fail the comparison."""
        return VAR_TEMPLATE.sub(lambda m: str(self.default(m.group(1))), template)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        assert (rtype, name) in self.resources, f"resource {rtype}.{name} is missing from deploy/"
        return self.resources[(rtype, name)]


@pytest.fixture(scope="module")
def tf() -> Config:
    return Config(TF_FILES)


def settings_env_names() -> dict[str, str]:
    """Environment variable -> Settings field, exactly as pydantic-settings reads them."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names[f"SFTPIPE_{field.upper()}"] = field
        elif isinstance(alias, str):
            names[alias.upper()] = field
        else:
            for choice in alias.choices:
                names[str(choice).upper()] = field
    return names


def settings_default(field: str) -> Any:
    info = Settings.model_fields[field]
    return info.default_factory() if info.default_factory is not None else info.default


# --- Parsing ----------------------------------------------------------------------------------


def test_deploy_has_the_terraform_files() -> None:
    names = {path.name for path in TF_FILES}
    assert {"versions.tf", "variables.tf", "main.tf", "outputs.tf"} <= names
    assert (DEPLOY / "README.md").is_file()


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: p.name)
def test_every_tf_file_parses(path: Path) -> None:
    with path.open() as handle:
        doc = hcl2.load(handle)
    assert doc, f"{path.name} is empty"


def test_every_variable_and_output_is_documented(tf: Config) -> None:
    undocumented = [name for name, body in tf.variables.items() if not unquote(body.get("description"))]
    assert not undocumented, f"variables without a description: {undocumented}"
    outputs: dict[str, Any] = {}
    for path in TF_FILES:
        with path.open() as handle:
            for block in hcl2.load(handle).get("output", []):
                outputs.update({unquote(k): v for k, v in block.items()})
    assert outputs, "deploy/ declares no outputs"
    assert all(unquote(body.get("description")) for body in outputs.values())


# --- Entry points -----------------------------------------------------------------------------


def test_entry_points_are_the_functions_main_exports(tf: Config) -> None:
    functions = unquote(tf.locals["functions"])
    assert set(functions) == set(main.__all__)
    for name, spec in functions.items():
        assert spec["entry_point"] == name
        assert callable(getattr(main, spec["entry_point"]))
    build = tf.resource("google_cloudfunctions2_function", "this")["build_config"][0]
    assert build["entry_point"] == "${each.value.entry_point}"
    assert tf.resource("google_cloudfunctions2_function", "this")["for_each"] == "${local.functions}"


def test_function_resources_cover_every_function_within_the_ack_deadline(tf: Config) -> None:
    resources = tf.default("function_resources")
    assert set(resources) == set(main.__all__)
    for name, spec in resources.items():
        assert 1 <= spec["timeout_s"] <= 540, f"{name}: Pub/Sub cannot wait longer than 600 s"
        assert spec["max_instances"] >= 1


def test_function_timeouts_are_the_ones_the_work_is_sized_for(tf: Config) -> None:
    """shared/budgets.py sizes submissions and evaluation calls to end inside these timeouts;
    a tuner or poller timeout shorter than one submission's worst case would cut a create off."""
    from shared import budgets

    resources = tf.default("function_resources")
    assert {name: spec["timeout_s"] for name, spec in resources.items()} == budgets.FUNCTION_TIMEOUT_S
    for name in ("tuner", "poller"):
        assert (
            budgets.submission_time_left(resources[name]["timeout_s"], 0) >= budgets.submission_worst_case_s()
        )


def test_the_reconciler_may_take_the_tuners_dead_letters_and_redo_ingest(tf: Config) -> None:
    reader = tf.resource("google_pubsub_subscription_iam_member", "reconciler_dead_letter_reader")
    assert reader["subscription"] == '${google_pubsub_subscription.dead_letter["tuner"].name}'
    assert reader["role"] == "roles/pubsub.subscriber"
    assert 'function["poller"]' in reader["member"] or 'function["poller"]' in reader["member"]
    upload_reader = tf.resource("google_storage_bucket_iam_member", "reconciler_upload_reader")
    assert upload_reader["condition"][0]["expression"] == (
        "${google_storage_bucket_iam_member.ingest_reader.condition[0].expression}"
    )
    grants = {key.strip('"') for key in tf.locals["bucket_grants"]}
    assert {"poller/write-prepared", "poller/write-reports"} <= grants
    assert "poller/tuning-requests" in {key.strip('"') for key in tf.locals["publish_grants"]}


def archived_files(excludes: list[str]) -> list[Path]:
    """The files archive_file puts in the source zip: an exclude is an exact relative path or a
    pattern (the provider's matching, approximated with fnmatch); a matching directory is skipped."""

    def excluded(relative: str) -> bool:
        return any(relative == ex or ("*" in ex and fnmatch.fnmatch(relative, ex)) for ex in excludes)

    files: list[Path] = []
    pending = [REPO]
    while pending:
        for path in sorted(pending.pop().iterdir()):
            relative = path.relative_to(REPO).as_posix()
            if excluded(relative):
                continue
            if path.is_dir():
                pending.append(path)
            else:
                files.append(path)
    return files


def test_source_archive_holds_what_main_imports(tf: Config, tmp_path: Path) -> None:
    """Import main.py from a copy of exactly the archived files; nothing may come from elsewhere."""
    source = next(body for block in _data_blocks() for body in block.get('"archive_file"', {}).values())
    assert unquote(source["source_dir"]) == "${path.module}/.."
    files = archived_files(unquote(source["excludes"]))
    names = {path.relative_to(REPO).as_posix() for path in files}
    assert {"main.py", "requirements.txt"} <= names
    assert not any(n.startswith(("tests/", "deploy/", ".venv", ".git/", "local/")) for n in names)
    for path in files:
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    # Modules loaded from the checkout (not from the copy, not from site-packages) are leaks.
    probe = (
        "import sys, main\n"
        "[getattr(main, target) for target in main.__all__]  # main imports each target lazily\n"
        "files = {m: getattr(mod, '__file__', None) or '' for m, mod in sys.modules.items()}\n"
        f"leaks = sorted(m for m, f in files.items() if f.startswith({str(REPO) + '/'!r}) "
        "and not f.startswith(sys.prefix))\n"
        "print(leaks)\n"
        "sys.exit(1 if leaks else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"main.py needs files the archive leaves out: {result.stdout}{result.stderr}"
    )


def _data_blocks() -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for path in TF_FILES:
        with path.open() as handle:
            blocks.extend(hcl2.load(handle).get("data", []))
    return blocks


# --- Environment ------------------------------------------------------------------------------


def test_every_environment_variable_is_a_settings_field(tf: Config) -> None:
    environment = tf.locals["settings_environment"]
    known = settings_env_names()
    unknown = sorted(set(environment) - set(known))
    assert not unknown, f"Terraform sets variables that Settings does not read: {unknown}"


def test_required_settings_are_set_for_every_function(tf: Config) -> None:
    environment = tf.locals["settings_environment"]
    missing = sorted(REQUIRED_ENV - set(environment))
    assert not missing, f"Terraform does not set {missing}"
    service = tf.resource("google_cloudfunctions2_function", "this")["service_config"][0]
    assert service["environment_variables"] == (
        "${merge(local.environment, {SFTPIPE_FUNCTION_TIMEOUT_S = "
        "tostring(var.function_resources[each.key].timeout_s), "
        f'MALLOC_MMAP_THRESHOLD_ = "{MALLOC_MMAP_THRESHOLD_BYTES}"}})}}'
    )
    assert expression(tf.locals["environment"]) == "merge(local.settings_environment, var.extra_environment)"


def test_environment_values_come_from_the_same_named_variables(tf: Config) -> None:
    """SFTPIPE_JOB_EVENTS_TOPIC = var.job_events_topic, never another variable."""
    environment = tf.locals["settings_environment"]
    checked = 0
    for name, value in environment.items():
        field = settings_env_names()[name]
        if field not in tf.variables:
            continue
        if field == "bucket":  # var.bucket, or <project>-sftpipe when it is empty
            assert value == "${local.bucket}"
            assert "var.bucket" in (expression(tf.locals["bucket"]) or "")
            continue
        assert f"var.{field}" in (expression(value) or ""), f"{name} = {value}, expected var.{field}"
        assert expression(value) in {
            f"var.{field}",
            f"tostring(var.{field})",
            f'join(",", var.{field})',
        }, f"{name} = {value}"
        checked += 1
    assert checked >= len(REQUIRED_ENV) - 2  # all but project (project_id) and bucket (local)


def test_variable_defaults_equal_settings_defaults(tf: Config) -> None:
    compared = []
    for name in tf.variables:
        if name not in Settings.model_fields or name in DEFAULTS_THAT_DIFFER:
            continue
        assert tf.default(name) == settings_default(name), f"var.{name} default drifted from Settings"
        compared.append(name)
    for field in ("tuning_requests_topic", "job_events_topic", "poll_ticks_topic", "uploads_topic"):
        assert field in compared
    assert {"dead_letter_suffix", "idempotency_collection", "incoming_prefix"} <= set(compared)


def test_environment_parses_into_the_settings_it_names(tf: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Render the environment with the variables' defaults and read it back through Settings."""
    for name in list(settings_env_names()):
        monkeypatch.delenv(name, raising=False)
    rendered: dict[str, str] = {}
    for name, value in tf.locals["settings_environment"].items():
        expr = expression(value)
        ref = re.search(r"var\.(\w+)", expr or "")
        if not ref or ref.group(1) == "project_id":
            continue
        default = tf.default(ref.group(1))
        rendered[name] = ",".join(default) if isinstance(default, list) else str(default)
        monkeypatch.setenv(name, rendered[name])
    settings = Settings()
    assert settings.tuning_requests_topic == rendered["SFTPIPE_TUNING_REQUESTS_TOPIC"]
    assert settings.smtp_port == int(rendered["SFTPIPE_SMTP_PORT"])
    assert settings.mail_to == []


# --- Topics, subscriptions, dead letters ------------------------------------------------------


def test_each_function_is_triggered_by_its_topic(tf: Config) -> None:
    functions = tf.locals["functions"]
    for function, setting in ROUTES.items():
        assert functions[function]["topic"] == f"${{var.{setting}}}"
        assert functions[function]["event_type"] == "${local.pubsub_published}"
    assert functions["ingest"]["topic"] is None
    assert functions["ingest"]["event_type"] == "${local.storage_finalized}"
    assert unquote(tf.locals["storage_finalized"]) == "google.cloud.storage.object.v1.finalized"
    assert unquote(tf.locals["pubsub_published"]) == "google.cloud.pubsub.topic.v1.messagePublished"
    topics = expression(tf.locals["topics"]) or ""
    for setting in ROUTES.values():
        assert f"var.{setting}" in topics


def test_dead_letter_names_follow_the_code(tf: Config) -> None:
    """<function>-<topic><dead_letter_suffix>, the names the local stack uses."""
    settings = Settings()
    functions = unquote(tf.locals["functions"])
    sources = {**{f: getattr(settings, s) for f, s in ROUTES.items()}, "ingest": settings.uploads_topic}
    for function, source in sources.items():
        expected = f"{function}-{source}{settings.dead_letter_suffix}"
        assert tf.render(functions[function]["dead_letter"]) == expected


def test_pubsub_triggered_functions_may_publish_to_their_own_dead_letter_topic(tf: Config) -> None:
    """shared/dead_letter.py publishes an invalid message there: the grant must exist, for
    exactly the functions the code can dead-letter from."""
    grant = tf.resource("google_pubsub_topic_iam_member", "function_dead_letter_publisher")
    assert grant["for_each"] == (
        "${{for name, function in local.functions : name => function if function.topic != null}}"
    )
    assert grant["topic"] == "${google_pubsub_topic.dead_letter[each.key].name}"
    assert grant["role"] == "roles/pubsub.publisher"
    assert grant["member"] == "serviceAccount:${google_service_account.function[each.key].email}"
    functions = unquote(tf.locals["functions"])
    with_topic = {name for name, function in functions.items() if function["topic"] is not None}
    settings = Settings()
    for name in ("tuner", "poller", "completion"):
        assert name in with_topic
        assert tf.render(functions[name]["dead_letter"]) == dead_letter_topic(name, settings)
    assert "ingest" not in with_topic


def test_every_trigger_gets_a_dead_letter_policy_and_a_kept_dead_letter(tf: Config) -> None:
    for rtype, name in [
        ("google_eventarc_trigger", "this"),
        ("google_pubsub_topic", "dead_letter"),
        ("google_pubsub_subscription", "dead_letter"),
        ("google_pubsub_topic_iam_member", "dead_letter_publisher"),
        ("google_pubsub_subscription_iam_member", "dead_letter_subscriber"),
        ("terraform_data", "delivery_policy"),
    ]:
        assert tf.resource(rtype, name)["for_each"] == "${local.functions}", f"{rtype}.{name}"
    policy = tf.resource("terraform_data", "delivery_policy")
    assert "dead_letter_topic" in policy["triggers_replace"]
    command = policy["provisioner"][0]["local-exec"]["command"]
    for flag in ("--dead-letter-topic", "--max-delivery-attempts", "--min-retry-delay", "--ack-deadline"):
        assert flag in command
    publisher = tf.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    subscriber = tf.resource("google_pubsub_subscription_iam_member", "dead_letter_subscriber")
    assert publisher["role"] == "roles/pubsub.publisher"
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert publisher["member"] == subscriber["member"] == "${local.pubsub_agent}"


# --- Secrets, scheduler, Firestore ------------------------------------------------------------


def test_secrets_are_the_secret_settings_and_never_plain_environment(tf: Config) -> None:
    secrets = unquote(tf.locals["secrets"])
    assert set(secrets) == SECRET_FIELDS
    assert set(Settings.model_fields) >= SECRET_FIELDS
    plain = {settings_env_names()[name] for name in tf.locals["settings_environment"]}
    assert not plain & SECRET_FIELDS, "a secret is passed as plain environment"
    dynamic = tf.resource("google_cloudfunctions2_function", "this")["service_config"][0]["dynamic"][0]
    content = dynamic["secret_environment_variables"]["content"][0]
    assert content["key"] == "SFTPIPE_${upper(secret_environment_variables.key)}"
    validation = tf.variables["notification_secrets"]["validation"][0]["condition"]
    assert set(re.findall(r'"(\w+)"', validation)) == SECRET_FIELDS


def test_scheduler_publishes_a_poll_tick_to_the_poll_topic(tf: Config) -> None:
    body = unquote(tf.locals["poll_tick_body"])
    tick = parse_message(PubSubMessage(message_id="1", data=body.encode()), PollTickV1)
    assert isinstance(tick, PollTickV1)
    job = tf.resource("google_cloud_scheduler_job", "poll_tick")
    target = job["pubsub_target"][0]
    assert target["data"] == "${base64encode(local.poll_tick_body)}"
    assert target["topic_name"] == "${google_pubsub_topic.this[var.poll_ticks_topic].id}"
    assert target["attributes"] == {"schema": PollTickV1.SCHEMA}
    assert tf.default("poll_schedule") == "* * * * *"


def test_idempotency_ttl_policy_is_on_the_field_the_code_writes(tf: Config) -> None:
    field = tf.resource("google_firestore_field", "idempotency_expire_at")
    assert field["collection"] == "${var.idempotency_collection}"
    assert f'"{field["field"]}"' in inspect.getsource(shared.idempotency)
    assert "ttl_config" in field
    database = tf.resource("google_firestore_database", "default")
    assert database["name"] == "${local.firestore_database}"
    assert unquote(tf.locals["firestore_database"]) == "(default)"  # firestore.Client(project=...) uses it
    assert field["database"] == "${local.firestore_database}"


def test_outbox_ttl_and_queue_index_match_the_job_store(tf: Config) -> None:
    from shared.state import store

    field = tf.resource("google_firestore_field", "job_events_expire_at")
    assert field["collection"] == store.OUTBOX_COLLECTION
    assert f'"{field["field"]}"' in inspect.getsource(store)
    index = tf.resource("google_firestore_index", "jobs_queue")
    assert index["collection"] == "${var.jobs_collection}"
    fields = [(f["field_path"], f["order"]) for f in index["fields"]]
    assert fields == [("status", "ASCENDING"), ("queued_at", "ASCENDING")]
    source = inspect.getsource(store.JobStore.claim_for_submission)
    assert '"status", "==", QUEUED' in source
    assert '.order_by("queued_at")' in source


# --- Security ---------------------------------------------------------------------------------


def test_bucket_is_private_versioned_and_expires_outputs(tf: Config) -> None:
    bucket = tf.resource("google_storage_bucket", "data")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"][0]["enabled"] is True
    prefixes = {
        rule["condition"][0]["matches_prefix"][0]
        for rule in bucket["lifecycle_rule"]
        if "matches_prefix" in rule["condition"][0]
    }
    assert prefixes == {"${var.prepared_prefix}", "${var.reports_prefix}"}


def test_nothing_may_write_under_incoming(tf: Config) -> None:
    grants = unquote(tf.locals["bucket_grants"])
    for key, grant in grants.items():
        if grant["prefix"] == "${var.incoming_prefix}":
            assert grant["role"] == "roles/storage.objectViewer", key
    assert {g["function"] for g in grants.values()} == {"ingest", "tuner", "poller", "completion"}


def test_checkov_skips_sit_in_a_resource_and_give_a_reason(tf: Config) -> None:
    pattern = re.compile(r"checkov:skip=(CKV2?_[A-Z]+_\d+):\s*(\S.*)")
    in_text = [line for path in TF_FILES for line in path.read_text().splitlines() if "checkov:skip" in line]
    in_resources = [
        comment["value"]
        for body in tf.raw_resources.values()
        for comment in body.get("__comments__", [])
        if "checkov:skip" in comment["value"]
    ]
    assert len(in_text) == len(in_resources), "a checkov skip is outside a resource block"
    for comment in in_resources:
        match = pattern.search(comment)
        assert match, f"malformed skip: {comment}"
        assert len(match.group(2)) >= 40, f"{match.group(1)}: give a real reason"


# --- Who may read what (architecture.md, "Who may read and notify what") ----------------------

#: How a grant's condition names an object prefix of the data bucket, rendered.
STARTS_WITH = re.compile(r'resource\.name\.startsWith\("projects/_/buckets/BUCKET/objects/([^"]+)"\)')
OBJECT_PREFIX_REF = "${local.object_prefix}"


def condition_prefixes(rendered: str) -> list[str]:
    """The prefixes of an 'a || b || ...' condition of startsWith clauses; any other clause fails."""
    prefixes = []
    for clause in rendered.split(" || "):
        match = STARTS_WITH.fullmatch(clause)
        assert match, f"unexpected clause in an IAM condition: {clause!r}"
        prefixes.append(match.group(1))
    return prefixes


def test_manifest_read_settings_come_from_terraform_with_the_code_defaults(tf: Config) -> None:
    environment = tf.locals["settings_environment"]
    known = settings_env_names()
    for variable, setting in (
        ("upload_prefixes", "SFTPIPE_UPLOAD_PREFIXES"),
        ("allowed_buckets", "SFTPIPE_ALLOWED_BUCKETS"),
    ):
        assert known[setting] == variable, f"{setting} is not the Settings field {variable}"
        assert expression(environment[setting]) == f'join(",", var.{variable})'
        assert tf.default(variable) == settings_default(variable)
    # What Terraform grants is what the code allows: the defaults are already normalised.
    policy = ReadPolicy.from_settings(Settings(), "BUCKET")
    assert tuple(tf.default("upload_prefixes")) == policy.upload_prefixes
    assert tf.default("allowed_buckets") == sorted(policy.allowed_buckets)


def test_ingest_reads_exactly_incoming_and_the_upload_prefixes(tf: Config) -> None:
    grant = tf.resource("google_storage_bucket_iam_member", "ingest_reader")
    assert grant["bucket"] == "${google_storage_bucket.data.name}"
    assert grant["role"] == "roles/storage.objectViewer"
    assert grant["member"] == 'serviceAccount:${google_service_account.function["ingest"].email}'
    assert (
        expression(tf.locals["ingest_read_prefixes"]) == "concat([var.incoming_prefix], var.upload_prefixes)"
    )
    assert (
        unquote(tf.locals["object_prefix"])
        == "projects/_/buckets/${google_storage_bucket.data.name}/objects/"
    )
    # join(" || ", [for p in local.ingest_read_prefixes : "<clause with ${p}>"]), rendered with
    # the defaults of the variables that list builds on.
    condition = expression(grant["condition"][0]["expression"]) or ""
    loop = re.fullmatch(
        r'join\(" \|\| ", \[for (\w+) in local\.ingest_read_prefixes : "(.*)"\]\)', condition, re.DOTALL
    )
    assert loop, f"unexpected shape of ingest's read condition: {condition}"
    name, clause = loop.group(1), loop.group(2).replace('\\"', '"')
    assert clause == f'resource.name.startsWith("{OBJECT_PREFIX_REF}${{{name}}}")'
    settings = Settings()
    prefixes = [tf.default("incoming_prefix"), *tf.default("upload_prefixes")]
    rendered = " || ".join(
        clause.replace(OBJECT_PREFIX_REF, "projects/_/buckets/BUCKET/objects/").replace(
            f"${{{name}}}", prefix
        )
        for prefix in prefixes
    )
    assert condition_prefixes(rendered) == [settings.incoming_prefix, *settings.upload_prefixes]
    # No other grant lets ingest read elsewhere in the bucket: its writers are prepared/ and reports/.
    ingest_grants = {
        g["prefix"] for g in unquote(tf.locals["bucket_grants"]).values() if g["function"] == "ingest"
    }
    assert ingest_grants == {"${var.prepared_prefix}", "${var.reports_prefix}"}


def test_ingest_reads_the_allowed_buckets_but_never_the_whole_data_bucket(tf: Config) -> None:
    grant = tf.resource("google_storage_bucket_iam_member", "ingest_allowed_bucket_reader")
    assert grant["for_each"] == "${local.ingest_allowed_buckets}"
    assert grant["bucket"] == "${each.value}"
    assert grant["role"] == "roles/storage.objectViewer"
    assert grant["member"] == 'serviceAccount:${google_service_account.function["ingest"].email}'
    assert expression(tf.locals["ingest_allowed_buckets"]) == (
        "toset([for name in var.allowed_buckets : name if name != local.bucket])"
    )


def test_the_vertex_service_agent_reads_prepared_only(tf: Config) -> None:
    grant = tf.resource("google_storage_bucket_iam_member", "dataset_reader")
    assert grant["for_each"] == "${local.dataset_readers}"
    assert grant["role"] == "roles/storage.objectViewer"
    rendered = tf.render(grant["condition"][0]["expression"]).replace(
        OBJECT_PREFIX_REF, "projects/_/buckets/BUCKET/objects/"
    )
    assert condition_prefixes(rendered) == [Settings().prepared_prefix]
    readers = expression(tf.locals["dataset_readers"]) or ""
    assert "google_project_service_identity.aiplatform.email" in readers
    assert "var.vertex_dataset_readers" in readers


def test_an_existing_firestore_database_can_be_used_instead_of_created(tf: Config) -> None:
    """create_firestore_database = false: no database resource, and what lives in the database
    (TTL policies, the queue index) names it by the local, never through the resource."""
    assert tf.default("create_firestore_database") is True
    database = tf.resource("google_firestore_database", "default")
    assert database["count"] == "${var.create_firestore_database ? 1 : 0}"
    dependents = [
        ("google_firestore_field", "idempotency_expire_at"),
        ("google_firestore_field", "job_events_expire_at"),
        ("google_firestore_index", "jobs_queue"),
    ]
    in_database = [
        key
        for key, body in tf.resources.items()
        if key[0].startswith("google_firestore_") and key[1] != "default"
    ]
    assert sorted(in_database) == sorted(dependents)
    for rtype, name in dependents:
        resource = tf.resource(rtype, name)
        assert resource["database"] == "${local.firestore_database}", f"{rtype}.{name}"
        # Ordered after the database when Terraform creates it (an empty list when it does not).
        assert "${google_firestore_database.default}" in resource["depends_on"], f"{rtype}.{name}"
    texts = "".join(path.read_text() for path in TF_FILES)
    assert "google_firestore_database.default.name" not in texts
    assert "google_firestore_database.default[0]" not in texts
