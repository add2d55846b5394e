"""Delivering the outbox: webhooks (Standard Webhooks signatures), e-mail and Slack.

The worker's triggers write ``workflow_notifications`` rows in the same transaction
as each job state change; :mod:`mediaq.notify.notifier` claims due rows, delivers
them through :mod:`channels` and records the outcome, with retries, back-off and a
circuit breaker per endpoint.
"""
