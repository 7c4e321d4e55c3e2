"""The operator console (`its console`): a live web view of cameras, traffic and incidents.

Kafka feeds the live state (cameras, health, detections, keyframes, events, alerts, acks); ClickHouse
feeds the last hour of traffic. The page is static HTML/JS served by the same process, updated over
server-sent events. Acknowledging an alert needs the operator token and writes an ``AlertAck``.
"""
