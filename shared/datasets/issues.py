"""Error and warning codes of dataset validation, and the :class:`Issue` each one travels in.

Codes reuse the names of Google's sample validator (``missing_contents_list`` ...) and OpenAI's
cookbook validator (``missing_messages_list`` ...) where they fit, because users recognise them.
``line`` is the 1-based line of the source file (for a JSON array or a stream of JSON documents,
the 1-based record index; for CSV/TSV the line where the row starts); 0 means the whole file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: Every error code, with what it means. Tests check that no other code is ever emitted.
ERROR_CODES: dict[str, str] = {
    # file level
    "file_too_large": "the file is larger than the model's training-file limit (1 GB: 10^9 bytes)",
    "training_file_too_large": "the prepared training file (Gemini JSONL) would exceed Vertex AI's 10^9 bytes",
    "source_unreadable": "the uploaded generation was deleted or replaced before ingest read it, or ingest may not read it",
    "empty_file": "the file has no records",
    "unsupported_format": "the file is not JSONL, JSON, CSV or TSV",
    "invalid_encoding": "the file is not UTF-8",
    "line_too_long": "one line is longer than the longest example we read",
    "csv_error": "the CSV/TSV file cannot be parsed past this point",
    "unreadable_json": "the JSON document cannot be parsed past this record",
    "csv_column_count": "a CSV/TSV row has a different number of fields than the header",
    "missing_column": "a column named by the mapping is not in the header",
    "unmapped_columns": "no input/output columns are recognised in the header, or the file has no header row",
    "no_examples": "no valid example is left to train on",
    "too_many_examples": "more training examples than the model accepts",
    "too_many_validation_examples": "more validation examples than the model accepts",
    "example_in_multiple_splits": "the same prompt (with this answer or another) is in more than one of train, validation, test",
    # record level: parsing and shape
    "invalid_json": "the line is not valid JSON",
    "data_type": "the record is not a JSON object",
    "unknown_shape": "the record matches no supported dataset shape",
    "mixed_shapes": "the record has a different shape than the file's first record",
    "unsupported_tool_calls": "a tool Vertex AI does not tune (a built-in or non-function tool, toolConfig, a tool speaker other than function_call / observation)",
    "invalid_function_declaration": "a tool declaration is not a function with a name (and optional description and parameters)",
    "invalid_function_name": "a function name is not a letter or underscore then letters, digits, '_', '.', '-', at most 64 characters",
    "invalid_function_parameters": "a function's parameters are not a JSON Schema Vertex AI can take",
    "duplicate_function_declaration": "a function is declared twice, or in both tools and functions",
    "invalid_function_call": "a tool call is not a function call with a name and arguments",
    "undeclared_function": "a call names a function the example does not declare",
    "invalid_function_arguments": "a call's arguments are not a JSON object (or JSON text of one)",
    "unpaired_tool_response": "a tool result answers no call of the model turn before it",
    "unanswered_function_call": "a model turn's function calls get no result in the next turn",
    "unsupported_preference_pairs": "preference pairs (chosen/rejected, preferred/non-preferred output, scored completions) are not supervised tuning data; preference_mode: chosen tunes on the preferred answers only",
    "kto_labels_present": "a KTO example labelled false (an undesirable answer) would become a training target; preference_mode: chosen or skip_invalid drops those examples",
    "invalid_preference_pair": "a preference record's chosen / rejected answer (or KTO label) is missing or of the wrong type",
    "unsupported_inline_data": "inline (base64) media cannot be used; give a gs:// or https:// URI",
    "unsupported_weight": "per-message weights cannot be expressed: Gemini trains on every model turn",
    "missing_field": "a field the shape needs is missing or not a string",
    # Gemini contents (names of Google's sample validator)
    "missing_contents_list": "contents is missing, not a list, or empty",
    "invalid_content_item": "an item of contents is not an object",
    "content_item_missing_key": "an item of contents lacks role or parts",
    "unrecognized_role": "a role is not one the shape allows",
    "missing_or_invalid_parts": "parts is missing, not a list, or empty",
    "invalid_part": "a part is neither a text part nor a fileData part",
    "missing_text": "a text is empty or only whitespace",
    "consecutive_turns": "two turns in a row have the same role",
    "invalid_system_instruction": "systemInstruction is not {parts: [{text}]}",
    "invalid_file_data": "fileData lacks mimeType or fileUri",
    "invalid_file_uri": "a file URI is not gs:// or https://",
    "unsupported_mime_type": "a file's MIME type is not accepted for tuning",
    "too_many_files": "more file parts in one example than the model accepts",
    # media: what a fileData part names (shared/datasets/media.py), checked before any spend
    "too_many_media_files": "more files of one modality in one example than Vertex AI accepts (30 images, 4 documents, 1 audio, 1 video)",
    "media_not_found": "a fileData URI names no object",
    "media_not_allowed": "a fileData URI names an object outside the upload's folder, the upload prefixes and the allowed buckets: it is never read",
    "media_unreadable": "a fileData object exists but ingest may not read it",
    "media_too_large": "a media object (or an example's documents together) is larger than Vertex AI accepts",
    "media_type_mismatch": "a fileData mimeType differs from the object's stored contentType",
    "invalid_media_resolution": "generationConfig.mediaResolution is not MEDIA_RESOLUTION_LOW, _MEDIUM or _HIGH",
    "mixed_media_resolution": "mediaResolution differs between parts or examples; Vertex AI needs one value for the dataset",
    "too_many_multimodal_examples": "more examples with media than Vertex AI accepts (300K)",
    "invalid_image_placeholders": "the <image> placeholders of a record do not match its images list",
    "invalid_media_path": "an images path is absolute, a URL or climbs out of the upload's folder (..)",
    # chat messages (names of OpenAI's cookbook validator)
    "missing_messages_list": "messages / conversations is missing, not a list, or empty",
    "message_missing_key": "a message lacks role/content (from/value)",
    "message_unrecognized_key": "a message has a key we cannot convert",
    "missing_content": "a message's content is missing or empty",
    "misplaced_system_message": "a system message after the first turn cannot be expressed",
    # conversation order
    "example_missing_user_message": "the example has no user turn",
    "example_missing_assistant_message": "the example has no model (assistant) turn to learn from",
    "first_turn_not_user": "the conversation must start with a user turn",
    "last_turn_not_model": "the conversation must end with a model turn (the target)",
    # budgets
    "too_many_tokens": "the example has more tokens than the model accepts",
}

#: Every warning code, with what it means.
WARNING_CODES: dict[str, str] = {
    "too_few_examples": "fewer training examples than recommended",
    "duplicates_removed": "exact duplicates (ignoring whitespace) were removed",
    "near_duplicates_removed": "near duplicates (equal once Unicode NFKC, case, whitespace and trailing punctuation are ignored) were removed; dedupe: exact keeps them",
    "records_skipped": "invalid records were skipped (skip_invalid)",
    "unknown_keys_dropped": "keys we do not convert were dropped",
    "rejected_answers_dropped": "preference_mode: chosen: each pair is tuned on its preferred answer; the rejected answers were dropped",
    "undesirable_examples_dropped": "KTO examples labelled false (undesirable answers) were dropped, never trained on",
    "schema_keywords_dropped": "function parameter schema keywords Vertex AI does not take were dropped",
    "validation_capped": "held-out examples over the model's validation limit went to train",
    "prompt_duplicates": "many prompts appear with several different answers: kept, each prompt in one split",
    "test_split_raised": "the test share was raised so that a small dataset holds out the minimum test size",
    "small_test_split": "the test split is below the minimum test size: its scores are too coarse to trust",
    "tokens_estimated": "token counts are estimates, not the Gemini tokenizer's",
    "model_limits_assumed": "the base model's limits are assumed from a sibling model, not documented",
    "media_not_checked": "fileData objects were not looked up (no bucket, or https://): existence, size and type unchecked",
    "errors_truncated": "the error list is capped; error_counts has every error",
}


class Issue(BaseModel):
    """One error, as the report and the ``--json`` contract show it."""

    model_config = ConfigDict(frozen=True)

    line: int
    field: str
    code: str
    message: str


class WarningItem(BaseModel):
    """One thing a warning names (a key dropped, an error code skipped): how often, and where."""

    model_config = ConfigDict(frozen=True)

    name: str
    count: int
    lines: list[int] = []


class DatasetWarning(BaseModel):
    """One warning: a code, a message, how many records it concerns and the first few lines.

    A warning that drops something lists in ``items`` each key, field or error code it dropped,
    with its count and example lines (the message says the same in words).
    """

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    count: int = 1
    lines: list[int] = []
    items: list[WarningItem] = []


class RecordIssueError(Exception):
    """Raised inside conversion: the record at hand is invalid (line is added by the caller)."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message
