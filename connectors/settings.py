"""Settings of the ClickHouse and webhook sinks: a section of the one `its.settings.Settings` object.

Environment variables reach a field as `ITS_<SECTION>__<FIELD>`; YAML as `<section>: {<field>: ...}`.
"""

from __future__ import annotations

from pydantic import BaseModel


class SinkSettings(BaseModel):
    """Fields are added by the component that owns this section."""
