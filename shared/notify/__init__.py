"""Notifications by Slack and email: what happened to a job or a dataset, with a link to its report.

``notifier.notify`` is the one entry point; ``slack`` and ``email`` each turn a channel-neutral
:class:`~shared.notify.notifier.Notification` into their format and send it. Sending is a plain
operation with a per-destination result: deciding that a job is notified only once is the
caller's business (Firestore), not this package's.
"""
