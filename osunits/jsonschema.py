"""JSON Schema of a service definition, derived from the field table."""

from __future__ import annotations

from typing import Any

from osunits.fields import SERVICE_FIELDS


def service_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://osunits.dev/schema/service.json",
        "title": "osunits service definition",
        "type": "object",
        "properties": {f.key: {**f.schema, "description": f.help} for f in SERVICE_FIELDS},
        # No "required": a file alone cannot know what `defaults` gives it (E107 is
        # checked on the merged service), and overrides are partial by nature.
        "additionalProperties": False,
    }
