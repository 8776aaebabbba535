"""The core of the tuning pipeline: all logic lives here; functions/ only adapts events to it.

This package never imports functions_framework or flask, and takes its clients as arguments.
"""
