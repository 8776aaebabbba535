"""Thin adapters: parse the event, call one entry point of `shared`, log, return."""
