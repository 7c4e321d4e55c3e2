"""The local Apache Kafka broker (KRaft, jars from Maven Central) that `its kafka start` runs."""

from infra.kafka.broker import KafkaStatus, LocalKafka
from infra.kafka.errors import KafkaPrerequisiteError, KafkaRuntimeError
from infra.kafka.jars import ensure_jars

__all__ = ["KafkaPrerequisiteError", "KafkaRuntimeError", "KafkaStatus", "LocalKafka", "ensure_jars"]
