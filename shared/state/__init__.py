"""Firestore documents and their transitions."""
