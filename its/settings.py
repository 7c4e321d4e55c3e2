"""One settings object for every component: environment variables (``ITS_*``) over an optional YAML file.

The YAML file is named by ``ITS_CONFIG``; keys are the field names below in lower case.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from connectors.settings import SinkSettings
from its.console.settings import ConsoleSettings
from its.privacy.settings import PrivacySettings
from processors.analytics.settings import AnalyticsSettings
from processors.inference.settings import InferenceSettings
from producers.settings import EdgeSettings
from schemas.validate import InputLimits


class KafkaSecurity(BaseModel):
    """Client-side Kafka security (``ITS_KAFKA_SECURITY__*``): TLS, SASL/SCRAM or mutual TLS, signing.

    Mapped into every librdkafka config by ``Settings.kafka_config``; ``kafka_client`` entries win.
    """

    protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = Field(
        "PLAINTEXT", description="security.protocol: SASL_SSL (SCRAM over TLS) or SSL (mutual TLS)"
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="sasl.mechanism (SASL_* protocols only)"
    )
    sasl_username: str | None = Field(None, description="sasl.username: this component's principal")
    sasl_password: SecretStr | None = Field(None, description="sasl.password")
    ssl_ca_location: Path | None = Field(None, description="PEM of the CA that signed the broker")
    ssl_certificate_location: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_key_location: Path | None = Field(None, description="client private key (mutual TLS)")
    ssl_key_password: SecretStr | None = Field(None, description="password of an encrypted client key")
    ssl_endpoint_identification: bool = Field(True, description="check the broker's name against its cert")
    signer: str | None = Field(None, description="edge site: sign records as this (edge-<camera prefix>)")
    signing_key: SecretStr | None = Field(None, description="edge site: its issued signing key (hex)")
    signing_secret: SecretStr | None = Field(
        None, description="processors: platform secret that verifies (and signs) edge-topic records"
    )

    def librdkafka(self) -> dict[str, object]:
        """The librdkafka properties of these settings (nothing for PLAINTEXT)."""
        conf: dict[str, object] = {}
        if self.protocol == "PLAINTEXT":
            return conf
        conf["security.protocol"] = self.protocol.lower()
        if self.protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                conf["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.protocol.endswith("SSL"):
            for name, path in (
                ("ssl.ca.location", self.ssl_ca_location),
                ("ssl.certificate.location", self.ssl_certificate_location),
                ("ssl.key.location", self.ssl_key_location),
            ):
                if path is not None:
                    conf[name] = str(path.expanduser().resolve())
            if self.ssl_key_password is not None:
                conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_endpoint_identification else "none"
            )
        return conf


class Settings(BaseSettings):
    """Everything that differs between a laptop and a city deployment."""

    model_config = SettingsConfigDict(env_prefix="ITS_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(
        Path(".its"), description="Where local state lives: broker logs, embedded ClickHouse"
    )
    cache_dir: Path = Field(Path(".cache"), description="Downloaded artefacts (Kafka jars); safe to delete")
    assets_dir: Path = Field(Path("../shared/assets"), description="Models, clips and images for tests")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_controller_port: int = Field(9093, description="KRaft controller port of the local broker")
    kafka_version: str = Field("3.9.1", description="Apache Kafka version the local broker runs")
    kafka_client: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka settings (security.protocol, sasl.*, ssl.*)"
    )
    kafka_security: KafkaSecurity = Field(
        default_factory=KafkaSecurity, description="TLS / SASL / mutual-TLS client settings and signing"
    )
    kafka_mtls_port: int = Field(9094, description="Mutual-TLS listener of the local broker (--secure)")

    schema_registry_url: str = Field("http://127.0.0.1:8081", description="Confluent-compatible registry")
    schema_registry_topic: str = Field(
        "_its_schemas", description="Compacted topic the local registry persists to"
    )

    clickhouse_url: str | None = Field(
        None, description="chdb:///abs/path (embedded) or http(s)://user:pass@host:8123/db; default embedded"
    )

    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    input_limits: InputLimits = Field(default_factory=InputLimits)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_format: str = Field("json", description="json (one object a line) or text")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("ITS_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"ITS_CONFIG names {config_file!r}, which is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # Derived values: absolute so that child processes started elsewhere agree.
    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def cache_path(self) -> Path:
        return self.cache_dir.expanduser().resolve()

    @property
    def assets_path(self) -> Path:
        return self.assets_dir.expanduser().resolve()

    @property
    def clickhouse_dsn(self) -> str:
        """The ClickHouse DSN in force: the setting, or an embedded store under the data directory."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{self.data_path / 'clickhouse'}"

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        parsed = urlparse(f"//{first}")
        return parsed.hostname or "127.0.0.1", parsed.port or 9092

    def kafka_config(self, **overrides: object) -> dict[str, object]:
        """librdkafka configuration for any client: bootstrap plus security settings plus overrides."""
        conf: dict[str, object] = {
            "bootstrap.servers": self.kafka_bootstrap,
            **self.kafka_security.librdkafka(),
            **self.kafka_client,  # the raw escape hatch wins over the typed settings
        }
        conf.update(overrides)
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()
