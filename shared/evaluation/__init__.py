"""Evaluation of a tuned model against its base model: metrics and the report.

Nothing heavy is imported here: a function that only needs the report must not pay for
rouge-score or sacrebleu at cold start.
"""
