"""Evaluation of a function-calling dataset: both models get the example's tools, the calls each
answer makes are recorded, and function-name accuracy and exact-argument match are scored as
ordinary metrics of summary.json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest
from google.genai import types
from local_http import JsonHandler, serving

from shared.config import Settings
from shared.evaluation.metrics import TaskChoice, compute_metrics, function_call_scores
from shared.evaluation.report import build_summary, render_report_html
from shared.evaluation.runner import (
    GenerationOptions,
    Prediction,
    base_answer,
    make_prediction,
    parse_test_example,
    request_config,
    response_text,
    run_predictions,
)
from shared.messages import Task

TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {"city": {"type": "STRING"}},
                    "required": ["city"],
                },
            }
        ]
    }
]


def _line(answer_parts: list[dict[str, Any]], question: str = "Weather in Porto?") -> bytes:
    return orjson.dumps(
        {
            "tools": TOOLS,
            "contents": [
                {"role": "user", "parts": [{"text": question}]},
                {"role": "model", "parts": answer_parts},
            ],
        }
    )


CALL_PORTO = {"functionCall": {"name": "get_weather", "args": {"city": "Porto"}}}


def _called(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    parts = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}


def _said(text: str) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]}


def test_a_test_example_keeps_its_tools_and_its_reference_calls() -> None:
    example = parse_test_example(_line([CALL_PORTO]), 0)

    assert example.tools == TOOLS
    assert example.reference_calls == [{"name": "get_weather", "args": {"city": "Porto"}}]
    # The call is the reference's text too, written as an answer's call is.
    assert example.reference == 'get_weather({"city":"Porto"})'


def test_the_example_tools_go_into_the_request_config() -> None:
    example = parse_test_example(_line([CALL_PORTO]), 0)
    plain = parse_test_example(_line([{"text": "Rain."}]).replace(b'"tools"', b'"other"'), 0)

    config = request_config(example, GenerationOptions())

    assert config.tools is not None
    (tool,) = config.tools
    assert tool.function_declarations is not None
    declaration = tool.function_declarations[0]
    assert declaration.name == "get_weather"
    assert declaration.parameters is not None
    assert declaration.parameters.type == types.Type.OBJECT
    assert request_config(plain, GenerationOptions()).tools is None


def test_an_answer_that_calls_records_its_calls_and_reads_as_their_text() -> None:
    answer = response_text(
        types.GenerateContentResponse.model_validate(_called(("get_weather", {"city": "Porto"})))
    )
    assert answer.error is None
    assert answer.calls == ({"name": "get_weather", "args": {"city": "Porto"}},)
    assert answer.text == 'get_weather({"city":"Porto"})'

    example = parse_test_example(_line([CALL_PORTO]), 0)
    prediction = make_prediction(
        example, answer, response_text(types.GenerateContentResponse.model_validate(_said("Rain.")))
    )
    assert prediction.base_calls == [{"name": "get_weather", "args": {"city": "Porto"}}]
    assert prediction.tuned_calls == []
    assert prediction.reference_calls == example.reference_calls
    assert Prediction.model_validate_json(prediction.to_jsonl()) == prediction
    assert base_answer(prediction).calls == answer.calls  # a baseline's answer is reused with its calls


def test_function_scores_compare_names_and_arguments_as_parsed_json() -> None:
    porto = {"name": "get_weather", "args": {"city": "Porto", "days": 2}}
    lisbon = {"name": "get_weather", "args": {"city": "Lisbon"}}
    time = {"name": "get_time", "args": {}}
    references = [[porto], [porto], [porto], [porto, lisbon], [], [], [porto]]
    answers = [
        [{"name": "get_weather", "args": {"days": 2, "city": "Porto"}}],  # other key order: a match
        [{"name": "get_weather", "args": {"city": "Porto", "days": "2"}}],  # "2" is not 2
        [time],  # the wrong function
        [lisbon, porto],  # parallel calls in another order
        [],  # rightly no call
        [time],  # a call where none was wanted
        [],  # no call where one was wanted
    ]

    scores = function_call_scores(references, answers)

    assert scores["function_name_accuracy"] == [1, 1, 0, 1, 1, 0, 0]
    assert scores["function_args_exact_match"] == [1, 0, 0, 1, 1, 0, 0]


def test_function_metrics_are_added_only_when_references_call() -> None:
    calls = [[{"name": "f", "args": {"x": 1}}], []]
    scored = compute_metrics(
        Task.GENERATION,
        ['f({"x":1})', "hello"],
        ['f({"x":1})', "hi"],
        reference_calls=calls,
        answer_calls=calls,
    )
    plain = compute_metrics(
        Task.GENERATION, ["a", "b"], ["a", "c"], reference_calls=[[], []], answer_calls=[[], []]
    )

    assert scored.scores["function_name_accuracy"] == 1.0
    assert scored.scores["function_args_exact_match"] == 1.0
    assert "exact_match" in scored.scores  # the text metrics are still there
    assert "function_name_accuracy" not in plain.scores


def test_summary_json_gets_the_function_metrics_with_intervals() -> None:
    reference = [[{"name": "get_weather", "args": {"city": "Porto"}}]] * 8
    wrong_city = [[{"name": "get_weather", "args": {"city": "Lisbon"}}]] * 8
    references = ['get_weather({"city":"Porto"})'] * 8
    base = compute_metrics(
        Task.GENERATION, references, ["It rains."] * 8, reference_calls=reference, answer_calls=[[]] * 8
    )
    tuned = compute_metrics(
        Task.GENERATION,
        references,
        ['get_weather({"city":"Lisbon"})'] * 8,
        reference_calls=reference,
        answer_calls=wrong_city,
    )

    summary = build_summary(
        job_id="j",
        dataset_id="d",
        base_model="gemini-2.5-flash",
        task_choice=TaskChoice(task=Task.GENERATION, decided_by="explicit", reason="given"),
        base=base,
        tuned=tuned,
    )

    metrics = {m.name: m for m in summary.metrics}
    names, args = metrics["function_name_accuracy"], metrics["function_args_exact_match"]
    assert (names.base, names.tuned, names.delta) == (0.0, 1.0, 1.0)
    assert (args.base, args.tuned) == (0.0, 0.0)
    assert names.delta_ci is not None
    assert names.significant
    body = orjson.loads(summary.model_dump_json())
    assert {"function_name_accuracy", "function_args_exact_match"} <= {m["name"] for m in body["metrics"]}
    html = render_report_html(summary)
    assert "function_name_accuracy" in html
    assert "function_args_exact_match" in html


# --- Through the real SDK ---------------------------------------------------------------------------


class _FakeVertex(JsonHandler):
    """generateContent: the tuned endpoint calls the function, the base model answers in words."""

    requests: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def respond(self, body: dict[str, Any]) -> Any:
        self.requests.append((self.path, body))
        if "/endpoints/" in self.path:
            return _called(("get_weather", {"city": "Porto"}))
        return _said("I cannot check the weather.")


@pytest.fixture
def fake_vertex() -> Iterator[str]:
    _FakeVertex.requests = []
    with serving(_FakeVertex) as url:
        yield url


def test_both_models_get_the_tools_and_the_calls_are_recorded(fake_vertex: str) -> None:
    settings = Settings(tuning_api_url=fake_vertex, project="p", location="us-central1")
    examples = [parse_test_example(_line([CALL_PORTO]), 0)]

    (prediction,) = run_predictions(
        settings,
        examples,
        base_model="gemini-2.5-flash",
        tuned_model="projects/p/locations/us-central1/endpoints/42",
        options=GenerationOptions(),
    )

    assert len(_FakeVertex.requests) == 2
    for _, body in _FakeVertex.requests:
        declarations = body["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in declarations] == ["get_weather"]
    assert prediction.tuned_calls == [{"name": "get_weather", "args": {"city": "Porto"}}]
    assert prediction.base_calls == []
    assert prediction.base_output == "I cannot check the weather."
    assert prediction.tuned_error is None
