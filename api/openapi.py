"""The OpenAPI schema with this server's limits in it.

The form's fields are typed from `engine.Settings`, whose limits are the server's (T2A_MAX_*),
known only when the app is made; FastAPI would publish `iterations: integer` and let a client
(or a fuzzer) learn the range from a 422. `install_openapi` publishes the ranges a request must
keep to (iterations, seed, scale, variations, the size's form and the prompt's length), the
upload's media types, and each bound a schema cannot say (width x height, upload bytes) in the
field's description. Every bound `engine.Settings` declares (frames, fps, ...) is published too,
the choices of the quality, the aspect, the style, the optimiser, ... as enums, a camera move's
number-or-keyframes form as a pattern, a web hook's and an e-mail's form, and the API key only
where keys are on (T2A_API_KEYS). A form field is never `null` (a form cannot send one: a field
left out takes its default). What is inside these ranges may still get a 422 for what a schema
cannot express (a size over T2A_MAX_PIXELS, frames x frame_iterations over T2A_MAX_ITERATIONS, a
bad prompt weight, an upload that is not an image), never a 5xx.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.config import ApiConfig
from api.forms import UPLOAD_FORMATS, UPLOADS, style_details
from api.jobs.notify import MAX_URL_CHARS
from engine import CAMERA_FIELDS, Settings, choices, schedule_pattern

FORM_PATHS = ("/generate", "/jobs")
# The form's fields whose value is one of a few names (`engine.choices`): published as enums.
CHOICE_FIELDS = ("quality", "aspect", "optimiser", "symmetry", "init_noise", "pixel_shape")
# JSON Schema's name for each bound of `annotated_types` (what pydantic's Field(ge=...) keeps).
_KEYWORDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum",
             "min_length": "minLength", "max_length": "maxLength"}  # fmt: skip
UPLOAD_TYPES = ", ".join(f"image/{fmt.lower()}" for fmt in UPLOAD_FORMATS)
SIZE_PATTERN = r"^\s*[0-9]{1,6}\s*[x×,\s]\s*[0-9]{1,6}\s*$"  # what engine.presets.parse_size reads


def install_openapi(app: FastAPI, config: ApiConfig) -> None:
    """Make `app.openapi()` publish the schema with `config`'s limits (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)  # fmt: skip
            for path in FORM_PATHS:
                with_limits(schema, path, config)
            if not config.api_keys:
                without_keys(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def without_keys(schema: dict[str, Any]) -> None:
    """A server without API keys asks for none: no operation lists a security requirement
    (a client that sends a key anyway is not refused)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    schema.get("components", {}).pop("securitySchemes", None)


def with_limits(schema: dict[str, Any], path: str, config: ApiConfig) -> None:
    """Put the server's limits into the form of `path`'s POST, and its uploads' media types."""
    content = schema["paths"][path]["post"]["requestBody"]["content"]
    for media in content.values():
        name = media["schema"]["$ref"].rsplit("/", 1)[-1]
        fields = schema["components"]["schemas"][name]["properties"]
        notes, bounds = field_notes(config), field_bounds(config)
        for field, schema_of in fields.items():
            _not_null(schema_of)
            published = {**settings_bounds(field), **bounds.get(field, {})}
            if published or field in notes:
                _bound(schema_of, published, notes.get(field, ""))
        for field in UPLOADS:
            _upload(fields.get(field), config)
        media["encoding"] = {field: {"contentType": UPLOAD_TYPES} for field in UPLOADS}


def field_bounds(config: ApiConfig) -> dict[str, dict[str, Any]]:
    """JSON Schema keywords of each bounded form field on this server."""
    limits = config.limits()
    return {
        "iterations": {"minimum": 1, "maximum": limits.max_iterations},
        "seed": {"minimum": 0, "maximum": _largest_seed()},
        "variations": {"minimum": 1, "maximum": limits.max_variations},
        "scale": {"exclusiveMinimum": 0, "maximum": limits.max_scale},
        "size": {"pattern": SIZE_PATTERN},
        "prompts": {"maxLength": limits.max_prompt_chars},
        "frames": {"minimum": 0, "maximum": limits.max_frames},
        "frame_iterations": {"minimum": 1, "maximum": limits.max_iterations},
        **{field: {"enum": list(named)} for field in CHOICE_FIELDS if (named := choices(field))},
        "style": {"enum": [s for d in style_details() for s in (d["name"], *d["aliases"])]},
        **{field: {"pattern": schedule_pattern(field)} for field in CAMERA_FIELDS},
        "webhook_url": {"format": "uri", "pattern": r"^https?://\S+$", "maxLength": MAX_URL_CHARS},
        "email": {"format": "email", "maxLength": 254},
    }


def settings_bounds(field: str) -> dict[str, Any]:
    """The bounds `engine.Settings` declares for a field (`Field(ge=1, le=60)`), as JSON Schema."""
    info = Settings.model_fields.get(field)
    found: dict[str, Any] = {}
    for constraint in info.metadata if info is not None else []:
        for attr, keyword in _KEYWORDS.items():
            if getattr(constraint, attr, None) is not None:
                found[keyword] = getattr(constraint, attr)
    return found


def field_notes(config: ApiConfig) -> dict[str, str]:
    """What each field's description adds: this server's limits, in words."""
    limits = config.limits()
    return {
        "iterations": f" 1 to {limits.max_iterations} on this server (T2A_MAX_ITERATIONS); "
        "left out, the default is cut to that.",
        "variations": f" 1 to {limits.max_variations} on this server.",
        "scale": f" At most {limits.max_scale:g} on this server.",
        "size": f" Width and height at least 8, width x height at most {limits.max_pixels} "
        "pixels on this server; left out, the size the aspect and scale give is cut to that.",
        "frames": f" At most {limits.max_frames} on this server; iterations + (frames - 1) x "
        f"frame_iterations at most {limits.max_iterations}.",
    }


def _largest_seed() -> int:
    """The seed's upper bound as `engine.Settings` declares it."""
    return int(next(m.le for m in Settings.model_fields["seed"].metadata if hasattr(m, "le")))


def _bound(field: dict[str, Any], bounds: dict[str, Any], note: str) -> None:
    """Add `bounds` to the field's schema (to its non-null branch when it is nullable)."""
    branches = [b for b in field.get("anyOf", [field]) if b.get("type") != "null"]
    for branch in branches:
        branch.update(bounds)
    field["description"] = field.get("description", "") + note


def _not_null(field: dict[str, Any]) -> None:
    """`anyOf: [X, null]` -> X: a form field is left out, never sent as null."""
    branches = [b for b in field.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1 and len(field["anyOf"]) == 2:
        del field["anyOf"]
        field.update(branches[0])


def _upload(field: dict[str, Any] | None, config: ApiConfig) -> None:
    """An upload's media types and size limits, in its schema and description."""
    if field is None:
        return
    for branch in field.get("anyOf", [field]):
        target = branch.get("items", branch)
        if target.get("type") == "string":
            target["contentMediaType"] = "image/*"
    field["description"] = (
        field.get("description", "") + f" PNG, JPEG, WebP or GIF (its first frame); at most "
        f"{config.max_upload_bytes} bytes and {config.max_upload_pixels} pixels."
    )
