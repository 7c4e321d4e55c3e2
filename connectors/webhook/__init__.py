"""Signed webhooks for integrators: its.alerts.v1 -> HTTP POST, dead-lettered after 3 attempts."""

from connectors.webhook.sink import Delivery, WebhookSink, alert_body, deliver, sign

__all__ = ["Delivery", "WebhookSink", "alert_body", "deliver", "sign"]
