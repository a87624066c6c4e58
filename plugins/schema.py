"""``schema``: validate each endpoint's inputs and outputs against JSON Schema.

Options:

* ``dir``: a directory holding ``<endpoint_id>.input.json`` and/or
  ``<endpoint_id>.output.json`` (either may be missing: that side is not checked);
* ``endpoints``: in the ``BRIDGE_PLUGINS_CONFIG`` file, ``{"<endpoint_id>": {"input": <path
  or inline schema>, "output": ...}}``, which wins over ``dir`` for the endpoints it names.

Schemas are loaded and checked once, when the plugin loads (a bad schema fails then, naming
the file). A bad input raises ``JobRejected`` before anything is submitted; a bad output
raises ``MalformedResponse``. Both messages give the JSON path of the bad field
(``$.messages[0].role``) and what was wrong. The input is checked after the other input
transforms (``trylast``), i.e. as it will be sent; the output before them (``tryfirst``),
i.e. as the endpoint returned it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from bridge import hookimpl
from bridge.errors import ConfigurationError, JobRejected, MalformedResponse, scrub

__all__ = ["SchemaPlugin", "load_schema"]

_HINT = "BRIDGE_PLUGIN_SCHEMA_DIR / the 'schema' section of BRIDGE_PLUGINS_CONFIG"


def load_schema(source: Any, where: str) -> Any:
    """A checked validator for an inline schema (dict) or a path to a JSON file."""
    if isinstance(source, (str, Path)):
        where = str(source)
        try:
            schema = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"plugin 'schema': cannot load {where}: {exc}", None, None, _HINT) from exc
    else:
        schema = source
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigurationError(
            f"plugin 'schema': {where} is not a valid JSON Schema: {exc.message}", None, None, _HINT
        ) from exc
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


class SchemaPlugin:
    """The registered plugin object; see the module docstring for options."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.input: dict[str, Any] = {}
        self.output: dict[str, Any] = {}
        directory = options.get("dir")
        if directory:
            path = Path(str(directory))
            if not path.is_dir():
                raise ConfigurationError(f"plugin 'schema': {path} is not a directory", None, None, _HINT)
            for file in sorted(path.glob("*.input.json")):
                self.input[file.name[: -len(".input.json")]] = load_schema(file, str(file))
            for file in sorted(path.glob("*.output.json")):
                self.output[file.name[: -len(".output.json")]] = load_schema(file, str(file))
        endpoints = options.get("endpoints") or {}
        if not isinstance(endpoints, Mapping):
            raise ConfigurationError(
                "plugin 'schema': option 'endpoints' must map endpoint ids to {input, output}", None, None, _HINT
            )
        for endpoint_id, sides in endpoints.items():
            for side in ("input", "output"):
                if isinstance(sides, Mapping) and sides.get(side) is not None:
                    target = self.input if side == "input" else self.output
                    target[endpoint_id] = load_schema(sides[side], f"endpoints.{endpoint_id}.{side}")

    @hookimpl(trylast=True)
    def bridge_transform_input(self, ctx: Any, input: Any) -> None:
        validator = self.input.get(ctx.endpoint_id)
        if validator is not None:
            problem = _problem(validator, input)
            if problem:
                raise JobRejected(
                    f"plugin 'schema': the input does not match endpoint {ctx.endpoint_id}'s input schema: {problem}",
                    ctx.job_id, ctx.endpoint_id, "the field at that path, or the endpoint's input schema",
                )

    @hookimpl(tryfirst=True)
    def bridge_transform_output(self, ctx: Any, output: Any) -> None:
        validator = self.output.get(ctx.endpoint_id)
        if validator is not None:
            problem = _problem(validator, output)
            if problem:
                raise MalformedResponse(
                    f"plugin 'schema': the output does not match endpoint {ctx.endpoint_id}'s output schema: {problem}",
                    ctx.job_id, ctx.endpoint_id, "the handler's output, or the endpoint's output schema", None,
                )


def _problem(validator: Any, instance: Any) -> str | None:
    """``"at $.a[0]: 'x' is not of type 'integer'"`` for the most relevant error, else None."""
    error = best_match(validator.iter_errors(instance))
    if error is None:
        return None
    message = scrub(error.message)
    if len(message) > 300:  # an echoed instance can be huge
        message = message[:300] + "..."
    return f"at {error.json_path}: {message}"
