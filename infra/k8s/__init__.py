"""Kubernetes examples (Strimzi Kafka, Altinity ClickHouse, components); ``render`` writes generated ones."""
