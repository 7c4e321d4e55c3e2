"""Registry operations with Confluent's semantics and error codes, over the store and the Kafka log.

Every change is written to the log first (acks=all, flushed), then applied to memory, all under one
lock; so an answer the client saw is durable, and ids are handed out one at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from infra.schema_registry.kafkalog import KafkaLog, LogError, Record
from infra.schema_registry.store import (
    SchemaStore,
    SchemaVersion,
    config_key,
    config_value,
    normalise,
    schema_key,
    schema_value,
)
from schemas.compatibility import LEVELS, InvalidSchemaError, is_compatible, parse

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """An error answer: HTTP status plus Confluent's ``error_code``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: object) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


class Registry:
    """The schema registry: thread-safe; ``load()`` before use, ``close()`` after."""

    def __init__(self, kafka_log: KafkaLog) -> None:
        self.log = kafka_log
        self.store = SchemaStore()
        self.lock = threading.RLock()
        self.loaded = False

    # --- lifecycle -------------------------------------------------------------------------------
    def load(self) -> None:
        """Create the topic if needed and rebuild the state from its beginning to its end."""
        with self.lock:
            self.log.ensure_topic()
            count = self.log.catch_up(self.store.apply)
            self.loaded = True
        log.info(
            "registry state loaded",
            extra={"topic": self.log.topic, "records": count, "subjects": len(self.store.subjects)},
        )

    def close(self) -> None:
        with self.lock:
            self.loaded = False
            self.log.close()

    def healthy(self) -> bool:
        return self.loaded and self.log.reachable()

    def _write(self, records: list[Record]) -> None:
        """Make ``records`` durable, then apply them. Caller holds the lock."""
        try:
            self.log.append(records)
            for key, value in records:
                self.store.apply(key, value)
        except LogError as exc:
            log.error("registry write failed", extra={"error": str(exc)})
            raise RegistryError(500, 50001, f"Error while storing the schema: {exc}") from exc

    def _sync(self) -> None:
        """Read what other instances may have written since (a single writer is still the rule)."""
        try:
            self.log.catch_up(self.store.apply)
        except LogError as exc:
            raise RegistryError(500, 50001, f"Error while reading the schema log: {exc}") from exc

    # --- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _validate(body: dict[str, Any]) -> str:
        """The normalised schema text of a request body; 422/42201 when it is not an Avro schema."""
        schema_type = body.get("schemaType") or "AVRO"
        if str(schema_type).upper() != "AVRO":
            raise RegistryError(
                422, 42201, f"Schema type {schema_type} is not supported: this registry serves AVRO only."
            )
        if body.get("references"):
            raise RegistryError(422, 42201, "Schema references are not supported by this registry.")
        text = body.get("schema")
        if not isinstance(text, str) or not text.strip():
            raise RegistryError(422, 42201, "Invalid schema: the request has no 'schema' string.")
        try:
            parse(text)
        except InvalidSchemaError as exc:
            raise RegistryError(422, 42201, f"Invalid schema: {exc}") from exc
        return normalise(text)

    def _version(self, subject: str, version: str | int, deleted: bool = False) -> SchemaVersion:
        entries = self.store.versions(subject, deleted=True)
        if not entries or not (deleted or any(not e.deleted for e in entries)):
            raise subject_not_found(subject)  # as Confluent: a fully soft-deleted subject is not found
        if str(version) in ("latest", "-1"):
            live = [e for e in entries if deleted or not e.deleted]
            if not live:
                raise version_not_found(subject, version)
            return live[-1]
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise RegistryError(
                422,
                42202,
                "The specified version is not a valid version id. Allowed values are "
                'between [1, 2^31-1] and the string "latest"',
            ) from None
        if number < 1:
            raise RegistryError(422, 42202, f"The specified version '{version}' is not a valid version id.")
        match = next((e for e in entries if e.version == number), None)
        if match is None or (match.deleted and not deleted):
            raise version_not_found(subject, version)
        return match

    @staticmethod
    def _level(level: object) -> str:
        if not isinstance(level, str) or level.upper() not in LEVELS:
            raise RegistryError(
                422, 42203, f"Invalid compatibility level {level!r}. Valid values are {', '.join(LEVELS)}"
            )
        return level.upper()

    # --- subjects and versions -------------------------------------------------------------------
    def register(self, subject: str, body: dict[str, Any]) -> tuple[int, bool]:
        """Register a schema under a subject: (id, whether a new version was made); 409 when incompatible."""
        text = self._validate(body)
        with self.lock:
            self._sync()
            existing = self.store.find(subject, text)
            if existing is not None:
                return existing.id, False
            live = self.store.versions(subject)
            level = self.store.compatibility(subject)
            ok, messages = is_compatible(text, [e.schema for e in live], level)
            if not ok:
                raise RegistryError(
                    409,
                    409,
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f"'{subject}' ({level}): " + "; ".join(messages),
                )
            schema_id = self.store.id_for(text) or self.store.next_id()
            text = self.store.schemas.get(schema_id, text)
            entry = SchemaVersion(subject, self.store.next_version(subject), schema_id, text)
            self._write([(schema_key(subject, entry.version), schema_value(entry))])
        log.info("schema registered", extra={"subject": subject, "version": entry.version, "id": schema_id})
        return schema_id, True

    def lookup(self, subject: str, body: dict[str, Any], deleted: bool = False) -> dict[str, Any]:
        text = self._validate(body)
        with self.lock:
            if not self.store.versions(subject, deleted=True):
                raise subject_not_found(subject)
            entry = self.store.find(subject, text, deleted=deleted)
            if entry is None:
                raise schema_not_found()
            return entry.to_json()

    def subjects(self, deleted: bool = False, prefix: str = "") -> list[str]:
        with self.lock:
            return [s for s in self.store.subject_names(deleted) if s.startswith(prefix)]

    def versions(self, subject: str, deleted: bool = False) -> list[int]:
        with self.lock:
            entries = self.store.versions(subject, deleted)
            if not entries:
                raise subject_not_found(subject)
            return [e.version for e in entries]

    def get_version(self, subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
        with self.lock:
            return self._version(subject, version, deleted).to_json()

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        """Soft delete every version; with ``permanent`` remove soft-deleted versions for good."""
        with self.lock:
            self._sync()
            entries = self.store.versions(subject, deleted=True)
            if not entries:
                raise subject_not_found(subject)
            live = [e for e in entries if not e.deleted]
            if permanent:
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently deleted",
                    )
                records: list[Record] = [(schema_key(subject, e.version), None) for e in entries]
                if subject in self.store.configs:
                    records.append((config_key(subject), None))
                self._write(records)
                return [e.version for e in entries]
            if not live:
                raise RegistryError(
                    404,
                    40404,
                    f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
                )
            self._write([(schema_key(subject, e.version), schema_value(_deleted(e))) for e in live])
        log.info("subject deleted", extra={"subject": subject, "permanent": permanent})
        return [e.version for e in live]

    def delete_version(self, subject: str, version: str, permanent: bool = False) -> int:
        with self.lock:
            self._sync()
            entry = self._version(subject, version, deleted=permanent)
            if permanent:
                if not entry.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {entry.version} was not deleted first "
                        "before being permanently deleted",
                    )
                self._write([(schema_key(subject, entry.version), None)])
            else:
                self._write([(schema_key(subject, entry.version), schema_value(_deleted(entry)))])
        log.info(
            "version deleted", extra={"subject": subject, "version": entry.version, "permanent": permanent}
        )
        return entry.version

    # --- schemas by id ---------------------------------------------------------------------------
    def schema_by_id(self, schema_id: int) -> str:
        with self.lock:
            text = self.store.schemas.get(schema_id)
            if text is None or not self.store.usages(schema_id, deleted=True):
                raise schema_not_found(f"Schema {schema_id} not found")
            return text

    def id_versions(self, schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            self.schema_by_id(schema_id)
            return [
                {"subject": e.subject, "version": e.version} for e in self.store.usages(schema_id, deleted)
            ]

    def id_subjects(self, schema_id: int, deleted: bool = False) -> list[str]:
        return sorted({v["subject"] for v in self.id_versions(schema_id, deleted)})

    # --- compatibility ---------------------------------------------------------------------------
    def test_compatibility(
        self, subject: str, version: str | None, body: dict[str, Any]
    ) -> tuple[bool, list[str]]:
        """Check a candidate against one version (``version``) or the history the level names (``None``)."""
        text = self._validate(body)
        with self.lock:
            level = self.store.compatibility(subject)
            if version is None:
                history = [e.schema for e in self.store.versions(subject)]
            else:
                history = [self._version(subject, version).schema]
            return is_compatible(text, history, level)

    def get_config(self, subject: str | None, default_to_global: bool = False) -> str:
        with self.lock:
            if subject is None or default_to_global:
                return self.store.compatibility(subject)
            if subject not in self.store.configs:
                raise RegistryError(
                    404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
                )
            return self.store.configs[subject]

    def set_config(self, subject: str | None, level: object) -> str:
        checked = self._level(level)
        with self.lock:
            self._write([(config_key(subject), config_value(checked))])
        log.info("compatibility set", extra={"subject": subject, "level": checked})
        return checked

    def delete_config(self, subject: str | None) -> str:
        with self.lock:
            previous = self.get_config(subject)
            self._write([(config_key(subject), None)])
            return previous


def _deleted(entry: SchemaVersion) -> SchemaVersion:
    return SchemaVersion(entry.subject, entry.version, entry.id, entry.schema, deleted=True)
