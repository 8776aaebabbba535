"""The ingest stage: one finalized upload -> a prepared dataset, its report and one tuning request.

- ``upload``: the entry point (:func:`ingest_upload`), the claim, the dataset document, the
  prepared files, the report, the request or the rejection notice;
- ``manifest``: an upload naming several files (``*.tuning.json|yaml``) and the rules for which
  objects a manifest may read.
Validation and conversion themselves are ``shared.datasets``.
"""

from shared.ingest.upload import READY, REJECTED, VALIDATING, ingest_upload, skip_reason

__all__ = ["READY", "REJECTED", "VALIDATING", "ingest_upload", "skip_reason"]
