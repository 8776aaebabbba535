"""Tuning SmolLM2-135M-Instruct through the service really improves it on held-out examples."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from google import genai
from google.genai import types
from tuning_helpers import TuningService, wait_for_end

from local.tuning import sample

#: 32 examples suffice: held-out accuracy went from 0.00-0.25 to 1.00 on seeds 3, 7 and 11 (64
#: took twice the training time for the same result).
TRAINING, VALIDATION, HELD_OUT = 32, 4, 20
SEED = 11


def accuracy(client: genai.Client, model: str, records: list[dict]) -> float:
    config = types.GenerateContentConfig(
        system_instruction=sample.SYSTEM_INSTRUCTION, temperature=0, max_output_tokens=4
    )
    correct = 0
    for record in records:
        text = record["contents"][0]["parts"][0]["text"]
        label = record["contents"][1]["parts"][0]["text"]
        answer = client.models.generate_content(model=model, contents=text, config=config).text or ""
        first_word = re.sub(r"[^a-z]", " ", answer.lower()).split()
        correct += bool(first_word) and first_word[0] == label
    return correct / len(records)


@pytest.mark.slow(150)
@pytest.mark.timeout(900)
def test_tuning_smollm2_improves_held_out_accuracy(
    new_service: Callable[..., TuningService], upload: Callable[..., str]
) -> None:
    records = sample.sentiment_records(TRAINING + VALIDATION + HELD_OUT, seed=SEED)
    training, validation = records[:TRAINING], records[TRAINING : TRAINING + VALIDATION]
    held_out = records[TRAINING + VALIDATION :]
    service = new_service(model="smollm2")
    client = service.client()

    before = accuracy(client, "gemini-2.5-flash", held_out)
    job = client.tunings.tune(
        base_model="gemini-2.5-flash",
        training_dataset=types.TuningDataset(gcs_uri=upload(training)),
        config=types.CreateTuningJobConfig(
            validation_dataset=types.TuningValidationDataset(gcs_uri=upload(validation)),
            epoch_count=2,
            adapter_size=types.AdapterSize.ADAPTER_SIZE_EIGHT,
            learning_rate_multiplier=2.0,
        ),
    )
    assert job.name is not None
    job = wait_for_end(client, job.name, timeout=600)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED, job.error
    assert job.tuned_model is not None
    assert job.tuned_model.endpoint is not None
    after = accuracy(client, job.tuned_model.endpoint, held_out)

    print(f"held-out accuracy: base {before:.2f}, tuned {after:.2f}")
    assert after > before
    assert after >= 0.9
