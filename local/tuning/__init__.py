"""A local, Vertex-compatible tuning service that fine-tunes a small open model with LoRA.

Run it with ``python -m local.tuning --port P --model smollm2|tiny --state-dir D`` (or
``sftpipe tuning-service``); point the pipeline at it with ``SFTPIPE_TUNING_API_URL``. Heavy
dependencies: requirements-tuning.txt and requirements-tuning-nodeps.txt.
"""
