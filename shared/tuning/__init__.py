"""Vertex AI tuning through google-genai: client factory, submission, polling, the queue."""
