"""The base-model table as data: the shipped rows, the operator's file (SFTPIPE_MODEL_LIMITS) that
extends or corrects them, rows assumed from a sibling and the warning every report repeats."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import gemini, jsonl, run

from shared.cli import main
from shared.config import get_settings
from shared.datasets import limits
from shared.datasets.limits import MODEL_LIMITS, known_models, model_limits, model_thinking
from shared.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[3]
TUNABLE = (
    "gemini-3.5-flash",
    "gemini-3.5-flash-lite",
    "gemini-3.1-flash-lite",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-1.5-pro",
    "gemini-1.5-flash",
)


PointAt = Callable[[str], None]


@pytest.fixture
def point_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[PointAt]:
    """Returns ``point_at(location)``: SFTPIPE_MODEL_LIMITS names it, read afresh."""

    def point(location: str) -> None:
        monkeypatch.setenv("SFTPIPE_MODEL_LIMITS", location)
        get_settings.cache_clear()
        limits._operator_table.cache_clear()

    yield point
    monkeypatch.delenv("SFTPIPE_MODEL_LIMITS")
    get_settings.cache_clear()
    limits._operator_table.cache_clear()


@pytest.fixture
def operator_table(point_at: PointAt, tmp_path: Path) -> Callable[..., Path]:
    """Returns ``use(text, name)``: writes the operator's table file and points the setting at it."""

    def use(text: str, name: str = "models.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        point_at(str(path))
        return path

    return use


def test_every_tunable_model_has_a_row_and_the_newest_say_they_are_assumed() -> None:
    for name in TUNABLE:
        assert model_limits(name).max_tokens_per_example > 0
    flash_35 = model_limits("gemini-3.5-flash")
    flash_25 = MODEL_LIMITS["gemini-2.5-flash"]
    assert flash_35.assumed_from == "gemini-2.5-flash"
    assert flash_35.max_validation_examples == flash_25.max_validation_examples
    assert flash_35.adapter_sizes == flash_25.adapter_sizes
    assert flash_35.aliases == ()  # a sibling's spellings are not copied
    assert "assumed from gemini-2.5-flash" in flash_35.assumed_note
    assert model_limits("gemini-3.1-flash-lite").assumed_from == "gemini-2.5-flash-lite"
    assert model_limits("gemini-2.5-pro").assumed_from is None
    assert model_limits("gemini-2.5-pro").assumed_note == ""
    assert model_limits("gemini-1.5-pro").name == "gemini-1.5-pro-002"


def test_the_table_is_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    assert limits.SHIPPED_TABLE in package_data["shared.datasets"]
    assert (REPO / "shared" / "datasets" / limits.SHIPPED_TABLE).is_file()


def test_the_report_repeats_the_assumption() -> None:
    data = jsonl(*(gemini(f"question {i}", f"answer {i}") for i in range(30)))

    assumed, _ = run(data, base_model="gemini-3.5-flash")
    documented, _ = run(data, base_model="gemini-2.5-flash")

    warning = next(w for w in assumed.warnings if w.code == "model_limits_assumed")
    assert "gemini-2.5-flash" in warning.message
    assert "SFTPIPE_MODEL_LIMITS" in warning.message
    assert "model_limits_assumed" not in {w.code for w in documented.warnings}


def test_sftpipe_validate_takes_a_new_model_and_says_its_limits_are_assumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(jsonl(*(gemini(f"question {i}", f"answer {i}") for i in range(30))))

    code = main(["validate", str(path), "--base-model", "gemini-3.5-flash", "--tokens", "estimate", "--json"])
    result = json.loads(capsys.readouterr().out)
    text_code = main(["validate", str(path), "--base-model", "gemini-3.5-flash", "--tokens", "estimate"])
    text = capsys.readouterr().out

    assert code == text_code == 0
    assert result["base_model"] == "gemini-3.5-flash"
    assert "model_limits_assumed" in {w["code"] for w in result["warnings"]}
    assert "model_limits_assumed" in text
    assert "assumed from" in " ".join(text.split())


def test_an_unknown_model_names_the_known_ones_and_the_setting() -> None:
    with pytest.raises(ConfigurationError) as caught:
        model_limits("gemini-9-ultra")
    assert caught.value.code == "unknown_base_model"
    assert "gemini-3.5-flash" in caught.value.message
    assert "SFTPIPE_MODEL_LIMITS" in caught.value.message


def test_the_operator_adds_a_model_and_corrects_a_shipped_row(operator_table: Callable[..., Path]) -> None:
    operator_table(
        """
models:
  gemini-9-flash:
    assumed_from: gemini-3.5-flash
    assumption: preview, limits not published
    aliases: [gemini-9-flash-preview]
    max_validation_examples: 1000
  gemini-3.5-flash:
    assumed_from: null          # now documented
    max_tokens_per_example: 262144
  gemini-1.5-pro:               # another spelling of gemini-1.5-pro-002
    max_validation_examples: 300
"""
    )

    new = model_limits("publishers/google/models/gemini-9-flash-preview")
    corrected = model_limits("gemini-3.5-flash")

    assert new.name == "gemini-9-flash"
    assert new.max_validation_examples == 1000
    # the rest is the sibling's, as this same file corrects it
    assert new.max_tokens_per_example == 262_144
    assert new.assumed_from == "gemini-3.5-flash"
    assert "preview, limits not published" in new.assumed_note
    assert model_thinking("gemini-9-flash").mode == "always"
    assert corrected.assumed_from is None
    assert corrected.max_tokens_per_example == 262_144
    assert corrected.adapter_sizes == MODEL_LIMITS["gemini-3.5-flash"].adapter_sizes  # kept
    assert model_limits("gemini-1.5-pro-002").max_validation_examples == 300
    assert {"gemini-9-flash", "gemini-2.5-flash"} <= set(known_models())
    assert model_limits("gemini-2.5-flash") is MODEL_LIMITS["gemini-2.5-flash"]  # untouched rows stay


def test_the_operator_file_is_read_once(operator_table: Callable[..., Path]) -> None:
    path = operator_table('{"models": {"gemini-9-flash": {"assumed_from": "gemini-2.5-flash"}}}', "rows.json")

    assert model_limits("gemini-9-flash").assumed_from == "gemini-2.5-flash"
    path.write_text('{"models": {}}')

    assert model_limits("gemini-9-flash").name == "gemini-9-flash"


def test_a_table_on_cloud_storage_is_read_from_its_bucket(
    monkeypatch: pytest.MonkeyPatch, point_at: PointAt
) -> None:
    reads: list[tuple[str, str]] = []

    def read_gcs(bucket: str, name: str) -> bytes:
        reads.append((bucket, name))
        return b"models:\n  gemini-9-flash: {assumed_from: gemini-2.5-pro}\n"

    monkeypatch.setattr(limits, "_read_gcs", read_gcs)
    point_at("gs://ops-bucket/tables/models.yaml")

    assert model_limits("gemini-9-flash").recommendation_family == "pro"
    assert model_limits("gemini-9-flash").adapter_sizes == (1, 2, 4, 8)
    assert reads == [("ops-bucket", "tables/models.yaml")]


@pytest.mark.parametrize(
    ("text", "row", "field", "says"),
    [
        (
            "models:\n  gemini-9: {assumed_from: gemini-2.5-flash, max_tokens_per_example: many}\n",
            "gemini-9",
            "max_tokens_per_example",
            "integer",
        ),
        (
            "models:\n  gemini-9: {assumed_from: gemini-2.5-flash, max_token_per_example: 5}\n",
            "gemini-9",
            "max_token_per_example",
            "not permitted",
        ),
        (
            "models:\n  gemini-9: {assumed_from: gemini-2.5-flash, adapter_sizes: [3]}\n",
            "gemini-9",
            "adapter_sizes.0",
            "16",
        ),
        (
            "models:\n  gemini-9: {assumed_from: gemini-2.5-flash, thinking: {mode: sometimes}}\n",
            "gemini-9",
            "thinking.mode",
            "always",
        ),
        (
            "models:\n  gemini-9: {max_tokens_per_example: 5}\n",
            "gemini-9",
            "max_training_examples",
            "assumed_from",
        ),
        ("models:\n  gemini-9: {assumed_from: gemini-8}\n", "gemini-9", "assumed_from", "gemini-8"),
        ("models:\n  a: {assumed_from: b}\n  b: {assumed_from: a}\n", "b", "assumed_from", "a -> b -> a"),
        (
            "models:\n  gemini-9: {assumed_from: gemini-2.5-flash, aliases: [gemini-2.5-pro]}\n",
            "gemini-9",
            "aliases",
            "another row",
        ),
        ("models:\n  gemini-9: 5\n", "gemini-9", "", "mapping"),
        ("gemini-9: {assumed_from: gemini-2.5-flash}\n", "", "", "{models:"),
        ("models: [unclosed\n", "", "", "not valid YAML"),
    ],
)
def test_a_malformed_operator_table_names_the_file_row_and_field(
    operator_table: Callable[..., Path], text: str, row: str, field: str, says: str
) -> None:
    path = operator_table(text)

    with pytest.raises(ConfigurationError) as caught:
        model_limits("gemini-2.5-flash")

    message = caught.value.message
    assert caught.value.code == "invalid_model_limits"
    assert str(path) in message
    assert says in message
    if row:
        assert f"row {row!r}" in message
    if field:
        assert f"field {field!r}" in message
        assert caught.value.field == f"models.{row}.{field}"


def test_a_missing_operator_table_is_a_configuration_error(point_at: PointAt, tmp_path: Path) -> None:
    point_at(str(tmp_path / "nowhere.yaml"))

    with pytest.raises(ConfigurationError, match=r"cannot read .*nowhere\.yaml"):
        model_limits("gemini-2.5-flash")
