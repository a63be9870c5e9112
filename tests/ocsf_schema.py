"""OCSF 1.7.0 JSON Schema validation for the tests (PyPI ocsf-json-schema + jsonschema)."""

from __future__ import annotations

import functools
from typing import Any

OCSF_VERSION = "1.7.0"


@functools.cache
def _validator(class_uid: int, profiles: tuple[str, ...]) -> Any:
    import jsonschema
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))
    name = schema.lookup_class_name_from_uid(class_uid=class_uid)
    js = schema.get_class_schema(class_name=name, profiles=list(profiles))
    cls = jsonschema.validators.validator_for(js)
    cls.check_schema(js)
    return cls(js)


def ocsf_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of an OCSF object (by its class_uid and the profiles its
    metadata declares), as readable lines."""
    profiles = tuple(sorted((obj.get("metadata") or {}).get("profiles") or ()))
    errors = _validator(int(obj["class_uid"]), profiles).iter_errors(obj)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
            for e in errors]
