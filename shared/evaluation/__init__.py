"""The completion stage: a tuned model evaluated against its base model, reported and notified.

- ``completion``: the entry point (:func:`~shared.evaluation.completion.handle_job_message`) and
  the evaluation's orchestration across invocations;
- ``record``: the ``evaluations/{job_id}`` document and its lease;
- ``chunks``: answers in chunks, continuations, merging them back;
- ``finalize``: scores, ``summary.json``, ``report.html``;
- ``notices``: what people are told (not evaluated, stalled, evaluated);
- ``inputs``: the job, the test split and the dataset's facts, as the evaluation reads them;
- ``runner`` (the model calls), ``metrics``, ``task_rule``, ``losses``, ``report``: the parts.

Nothing heavy is imported here: a function that only needs the report must not pay for
rouge-score or sacrebleu at cold start.
"""
