"""Registry state in memory, rebuilt from and changed only by keyed log records (as Confluent's `_schemas`).

Keys and values are the JSON documents written to the compacted topic:
``{"keytype": "SCHEMA", "subject", "version", "magic": 1}`` -> ``{"subject", "version", "id", "schema",
"schemaType", "deleted"}`` and ``{"keytype": "CONFIG", "subject", "magic": 0}`` -> ``{"compatibilityLevel"}``.
A ``None`` value is a tombstone (hard delete). Applying a record twice is harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DEFAULT_COMPATIBILITY = "BACKWARD"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a subject."""

    subject: str
    version: int
    id: int
    schema: str
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema}


def normalise(schema: str) -> str:
    """The text the registry stores and returns: compact JSON in the author's key order."""
    return json.dumps(json.loads(schema), separators=(",", ":"))


def identity(schema: str) -> str:
    """What makes two schemas "the same" for id reuse: compact JSON with sorted keys.

    Not the Parsing Canonical Form: that drops defaults and aliases, which change compatibility.
    """
    return json.dumps(json.loads(schema), separators=(",", ":"), sort_keys=True)


def schema_key(subject: str, version: int) -> dict[str, Any]:
    return {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}


def schema_value(entry: SchemaVersion) -> dict[str, Any]:
    return {**entry.to_json(), "schemaType": "AVRO", "deleted": entry.deleted}


def config_key(subject: str | None) -> dict[str, Any]:
    return {"keytype": "CONFIG", "subject": subject, "magic": 0}


def config_value(level: str) -> dict[str, Any]:
    return {"compatibilityLevel": level}


class SchemaStore:
    """Ids, subjects and configs. Not thread-safe by itself: the registry service holds the lock."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.ids_by_identity: dict[str, int] = {}
        self.subjects: dict[str, dict[int, SchemaVersion]] = {}
        self.configs: dict[str | None, str] = {}
        self.max_id = 0

    # --- applying log records -------------------------------------------------------------------
    def apply(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        """Apply one record of the log; unknown key types are skipped (other writers, NOOPs)."""
        keytype = key.get("keytype")
        if keytype == "SCHEMA":
            self._apply_schema(key, value)
        elif keytype == "CONFIG":
            subject = key.get("subject")
            if value is None:
                self.configs.pop(subject, None)
            else:
                self.configs[subject] = str(value["compatibilityLevel"]).upper()

    def _apply_schema(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        subject, version = str(key["subject"]), int(key["version"])
        versions = self.subjects.setdefault(subject, {})
        if value is None:
            versions.pop(version, None)
            if not versions:
                del self.subjects[subject]
            return
        schema_id = int(value["id"])
        entry = SchemaVersion(subject, version, schema_id, value["schema"], bool(value.get("deleted", False)))
        versions[version] = entry
        # An id keeps its first text; ids only grow, also across hard deletes seen in this log.
        self.schemas.setdefault(schema_id, entry.schema)
        self.ids_by_identity.setdefault(identity(entry.schema), schema_id)
        self.max_id = max(self.max_id, schema_id)

    # --- queries ---------------------------------------------------------------------------------
    def id_for(self, schema: str) -> int | None:
        return self.ids_by_identity.get(identity(schema))

    def next_id(self) -> int:
        return self.max_id + 1

    def versions(self, subject: str, deleted: bool = False) -> list[SchemaVersion]:
        """A subject's versions, oldest first; soft-deleted ones only when asked."""
        entries = sorted(self.subjects.get(subject, {}).values(), key=lambda e: e.version)
        return [e for e in entries if deleted or not e.deleted]

    def next_version(self, subject: str) -> int:
        # Soft-deleted versions keep their numbers: a new version never reuses one.
        return max(self.subjects.get(subject, {}), default=0) + 1

    def subject_names(self, deleted: bool = False) -> list[str]:
        return sorted(s for s in self.subjects if self.versions(s, deleted))

    def find(self, subject: str, schema: str, deleted: bool = False) -> SchemaVersion | None:
        """The newest version of ``subject`` holding ``schema``."""
        wanted = identity(schema)
        for entry in reversed(self.versions(subject, deleted)):
            if identity(entry.schema) == wanted:
                return entry
        return None

    def usages(self, schema_id: int, deleted: bool = False) -> list[SchemaVersion]:
        """Every subject version that uses ``schema_id``."""
        return [
            e
            for subject in sorted(self.subjects)
            for e in self.versions(subject, deleted)
            if e.id == schema_id
        ]

    def compatibility(self, subject: str | None) -> str:
        """The level in force for ``subject``: its own, else the global one, else BACKWARD."""
        if subject is not None and subject in self.configs:
            return self.configs[subject]
        return self.configs.get(None, DEFAULT_COMPATIBILITY)
