"""One settings object for every component: environment variables (``ITS_*``) over an optional YAML file.

The YAML file is named by ``ITS_CONFIG``; keys are the field names below in lower case.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from connectors.settings import SinkSettings
from processors.analytics.settings import AnalyticsSettings
from processors.inference.settings import InferenceSettings
from producers.settings import EdgeSettings


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
        conf: dict[str, object] = {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_client}
        conf.update(overrides)
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()
