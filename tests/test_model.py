"""The field table and the model stay one declaration."""

from __future__ import annotations

import dataclasses

from osunits.fields import SERVICE_FIELDS
from osunits.model import DependencyKind, Service


def test_every_field_is_a_service_attribute() -> None:
    attrs = {f.name for f in dataclasses.fields(Service)}
    keys = {f.key for f in SERVICE_FIELDS}
    kinds = {str(k) for k in DependencyKind}
    assert keys - kinds <= attrs
    # everything else on Service is derived: dependencies from the kinds, where it came from
    assert attrs - (keys - kinds) == {"dependencies", "source", "loc", "key_locs"}
