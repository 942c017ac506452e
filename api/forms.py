"""The generation form of the design card, shared by `POST /generate` and `POST /jobs`.

`FORM_FIELDS` names the card's fields, each a field of `engine.Settings`; the dependency
`generate_form` (typed alias `GenerateFormDep`) is built from that list, with each field's type,
default, description and examples taken from `Settings.model_fields`, so the form, its OpenAPI
schema and the engine never disagree. It accepts multipart and urlencoded bodies and keeps only
the fields the client sent: what it leaves out is decided at resolution (the card's defaults,
then the engine's). A second dependency extends the form with its own `Form` parameters and
FastAPI merges both into one body (see `api.routes.jobs.job_form`). `style_details` says how
people see each style the form offers (the web page's cards and `/info`), from the registry.
"""

from __future__ import annotations

import inspect
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from api.config import ApiConfig
from api.cost import check_cost
from engine import (
    ResolvedSettings,
    Settings,
    drawer_class,
    image_prompt_entry,
    list_drawers,
    parse_image_prompt,
    publish,
    resolve,
)
from engine.errors import SettingsError

# The card's fields, in the order of the form.
FORM_FIELDS = (
    "prompts", "seed", "iterations", "quality", "aspect", "scale", "style", "make_video", "size",
    "init_image", "image_prompts", "variations",
    "frames", "frame_iterations", "zoom", "angle", "translate_x", "translate_y", "fps",
    "optimiser", "learning_rate", "symmetry", "symmetry_weight", "tile", "init_noise",
    "augments", "cut_power", "save_every", "stroke_width", "pixel_shape",
)  # fmt: skip
UPLOADS = ("init_image", "image_prompts")
# The form's own field beside the card's: the image prompts' weights, in the uploads' order (the
# command line writes them after each file: --image-prompt cat.png:0.5).
WEIGHTS_FIELD = "image_prompt_weights"
WEIGHTS_HELP = (
    "Weights of the image prompts, comma-separated in their order, each like a text prompt's: "
    "'0.5, -1' (negative: away from that image), '1:0.2' adds a stop (default 1 each)."
)
# How a field travels in a form when not as its `Settings` type: uploads are files, a size is
# "WxH" text, and the scale always has the card's default.
_FORM_TYPES: dict[str, Any] = {
    "scale": float,
    "size": str | None,
    "stroke_width": str | None,
    "augments": str,
    "init_image": UploadFile | None,
    "image_prompts": list[UploadFile] | None,
}
_EXAMPLES: dict[str, list[Any]] = {
    "seed": [42], "make_video": [False], "size": ["256x256"], "variations": [1], "frames": [0],
    "frame_iterations": [20], "zoom": ["1"], "angle": ["0"], "translate_x": ["0"],
    "translate_y": ["0"], "fps": [12], "learning_rate": [0.1], "symmetry_weight": [1.0],
    "tile": [False], "cut_power": [1.0], "save_every": [0], "stroke_width": ["2,8"],
}  # fmt: skip
# The card's defaults where they differ from the engine's (the engine lets the quality decide);
# they are resolution defaults: a value the client or the chosen model gives wins.
CARD_DEFAULTS: dict[str, Any] = {"scale": 2.5}
_CHUNK = 1024 * 1024
# The formats an upload may have: Pillow tries no other decoder on it (TIFF, BMP, ICO, JPEG 2000,
# AVIF, ... each bring a parser an attacker could aim at). A GIF or animated WebP counts by its
# first frame.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
ALLOWED = "PNG, JPEG, WebP or GIF (its first frame)"


def style_details() -> list[dict[str, Any]]:
    """How people see each registered style, in registry order (`/info`'s `style_details`): its
    title is its name with a capital first letter; `default` marks the form's default."""
    default = default_of("style")
    details = []
    for name in list_drawers():
        drawer = drawer_class(name)
        details.append(
            {
                "name": name,
                "title": name[:1].upper() + name[1:],
                "summary": drawer.summary,
                "aliases": list(drawer.aliases),
                "pixelated": drawer.pixelated,
                "default": name == default,
            }
        )
    return details


def default_of(name: str) -> Any:
    """The form's default for a setting: the card's, else the engine's."""
    if name in CARD_DEFAULTS:
        return CARD_DEFAULTS[name]
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    return ",".join(default) if isinstance(default, list) else default  # a form sends text


def describe(name: str) -> str:
    """The setting's help text; a '(default: ...)' clause goes when the form sets its own."""
    text = Settings.model_fields[name].description or ""
    if name in CARD_DEFAULTS:
        text = re.sub(r"\s*\(default:[^)]*\)", "", text)
    return text


def form_field(name: str, *, upload: bool = False, **overrides: Any) -> Any:
    """`Form`/`File` metadata for a setting, described from `Settings.model_fields`."""
    info = Settings.model_fields[name]
    examples = [e for e in (info.examples or []) if e is not None] or None
    kwargs: dict[str, Any] = {"description": describe(name), "examples": examples}
    kwargs.update(overrides)
    if kwargs["examples"] is None:
        del kwargs["examples"]
    return File(**kwargs) if upload else Form(**kwargs)


@dataclass
class GenerateForm:
    """The card's form as sent: the setting values the client gave, and its uploads (unread)."""

    given: dict[str, Any]
    init_image: UploadFile | None = None
    image_prompts: list[UploadFile] = field(default_factory=list)
    image_weights: str | None = None  # `WEIGHTS_FIELD` as sent


async def generate_form(request: Request, **sent: Any) -> GenerateForm:
    """Collect the card's form fields (multipart or urlencoded); its parameters are set below."""
    raw = await request.form()  # parsed once by FastAPI already; this reads its cache
    given = {name: value for name, value in sent.items() if _was_sent(name, value, raw)}
    if isinstance(raw.get("prompts"), str):  # FastAPI turns a sent "" into the default
        given["prompts"] = str(raw["prompts"])
    init_image = given.pop("init_image", None)
    image_prompts = list(given.pop("image_prompts", None) or [])
    return GenerateForm(given, init_image, image_prompts, given.pop(WEIGHTS_FIELD, None))


def _was_sent(name: str, value: Any, raw: FormData) -> bool:
    """Whether the client gave the field (FastAPI fills in the defaults of the others)."""
    if name in UPLOADS:
        return bool(value)
    return value is not None and raw.get(name) not in (None, "")


def _form_parameter(name: str) -> inspect.Parameter:
    """The dependency's parameter for one card field."""
    upload = name in UPLOADS
    annotation = _FORM_TYPES.get(name, Settings.model_fields[name].annotation)
    extra = {"examples": _EXAMPLES[name]} if name in _EXAMPLES else {}
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None if upload else default_of(name),
        annotation=Annotated[annotation, form_field(name, upload=upload, **extra)],
    )


def _form_signature() -> inspect.Signature:
    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [request.replace(annotation=Request), *map(_form_parameter, FORM_FIELDS)]
    weights = Form(description=WEIGHTS_HELP, examples=["0.5, -1"])
    params.append(
        inspect.Parameter(
            WEIGHTS_FIELD, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[str | None, weights],
        )
    )  # fmt: skip
    return inspect.Signature(params, return_annotation=GenerateForm)


# FastAPI reads a dependency's parameters from its signature: one per card field.
generate_form.__signature__ = _form_signature()  # type: ignore[attr-defined]
GenerateFormDep = Annotated[GenerateForm, Depends(generate_form)]


async def build_settings(
    form: GenerateForm, config: ApiConfig, upload_dir: Path
) -> ResolvedSettings:
    """Checked, resolved settings for the form; uploads are saved under `upload_dir`.

    Raises `SettingsError` (a 422 naming the field).
    """
    return await with_uploads(form_settings(form, config), form, config, upload_dir)


def form_settings(form: GenerateForm, config: ApiConfig) -> Settings:
    """The form's fields as `Settings` with the server's overrides: a bad field fails here,
    before any upload is read (`SettingsError`, a 422 naming it)."""
    settings = Settings.create(**{**form.given, **server_overrides(config)})
    most = config.limits().max_prompts
    if len(form.image_prompts) > most:
        n = len(form.image_prompts)
        raise SettingsError("image_prompts", f"{n} images given; at most {most}")
    image_weights(form)  # checked before any upload is read
    return settings


def image_weights(form: GenerateForm) -> list[tuple[float, float]]:
    """(weight, stop) of each uploaded image prompt, from `WEIGHTS_FIELD` (default weight 1, no
    stop); `SettingsError` naming the field for a bad number or a count that does not match."""
    n = len(form.image_prompts)
    if not form.image_weights or not form.image_weights.strip():
        return [(1.0, float("-inf"))] * n
    parts = [part.strip() for part in form.image_weights.split(",")]
    if len(parts) != n:
        raise SettingsError(
            WEIGHTS_FIELD, f"{len(parts)} weights for {n} image prompts; give one per image"
        )
    weights = []
    for part in parts:
        try:
            prompt = parse_image_prompt(f"file:{part}")
        except ValueError as exc:
            raise SettingsError(WEIGHTS_FIELD, str(exc)) from None
        if prompt.text != "file":
            raise SettingsError(WEIGHTS_FIELD, f"{part!r} is not a weight like 0.5 or -1:0.2")
        weights.append((prompt.weight, prompt.stop))
    return weights


async def with_uploads(
    settings: Settings, form: GenerateForm, config: ApiConfig, upload_dir: Path
) -> ResolvedSettings:
    """`settings` pointing at the form's images, stored under `upload_dir` (checked), then
    resolved with the server's limits; on any failure the stored images are removed."""
    try:
        uploads = await _store_uploads(form, config, upload_dir)
        if uploads:
            settings = Settings.create(**{**settings.model_dump(exclude_unset=True), **uploads})
        return resolve_settings(settings, config)
    except BaseException:
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise


def resolve_settings(
    settings: Settings, config: ApiConfig, *, priced: bool = True
) -> ResolvedSettings:
    """Resolve with the server's limits; the card's defaults fill what nobody gave. With
    `priced`, a request whose estimated run time is over the ceiling is `TooCostly` (a 422,
    `api.cost`)."""
    resolved = resolve(settings, config.limits(), defaults=CARD_DEFAULTS)
    if priced:
        check_cost(resolved, config.max_cost, config.device)
    return resolved


def server_overrides(config: ApiConfig) -> dict[str, Any]:
    """Settings the server imposes on every request (models, device, cutouts): given values,
    they win over the client's and the presets'."""
    overrides = {
        "clip_models": config.clip_models,
        "vqgan_model": config.vqgan_model,
        "device": config.device,
        "cutouts": config.cutouts,
    }
    return {k: v for k, v in overrides.items() if v is not None}


async def _store_uploads(form: GenerateForm, config: ApiConfig, upload_dir: Path) -> dict[str, Any]:
    """Save the form's images; returns the `Settings` values pointing at them."""
    values: dict[str, Any] = {}
    if form.init_image is not None:
        path = await run_in_threadpool(
            store_upload, form.init_image.file, "init_image", "init", upload_dir, config
        )
        values["init_image"] = str(path)
    paths = []
    for i, upload in enumerate(form.image_prompts):
        stem = f"prompt-{i}"
        paths.append(
            await run_in_threadpool(
                store_upload, upload.file, "image_prompts", stem, upload_dir, config
            )
        )
    if paths:
        weighted = zip(paths, image_weights(form), strict=True)
        values["image_prompts"] = [image_prompt_entry(str(p), *w) for p, w in weighted]
    return values


def store_upload(
    file: IO[bytes], field: str, stem: str, upload_dir: Path, config: ApiConfig
) -> Path:
    """Copy an upload to `upload_dir/stem.EXT` after checking its size, format and pixel count."""
    upload_dir.mkdir(parents=True, exist_ok=True)
    raw = upload_dir / f"{stem}.upload"
    _copy_limited(file, raw, field, config.max_upload_bytes)
    try:
        fmt = check_image(raw, field, config.max_upload_pixels)
    except BaseException:
        raw.unlink(missing_ok=True)
        raise
    return publish(raw, upload_dir / f"{stem}.{fmt}")


def _copy_limited(file: IO[bytes], dest: Path, field: str, max_bytes: int) -> None:
    """Copy at most `max_bytes`; 422 when the upload is empty or larger."""
    size = 0
    with dest.open("wb") as out:
        while chunk := file.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                dest.unlink(missing_ok=True)
                raise SettingsError(
                    field, f"the file is over the upload limit of {_human(max_bytes)}"
                )
            out.write(chunk)
    if size == 0:
        dest.unlink(missing_ok=True)
        raise SettingsError(field, f"the file is empty; upload a {ALLOWED} image")


def _human(n_bytes: int) -> str:
    mib = 1024 * 1024
    return f"{n_bytes // mib} MB" if n_bytes % mib == 0 else f"{n_bytes} bytes"


def check_image(path: Path, field: str, max_pixels: int) -> str:
    """The image's format as a file extension; 422 for other formats (`UPLOAD_FORMATS`),
    non-images and decompression bombs."""
    try:
        with Image.open(path, formats=UPLOAD_FORMATS) as img:
            width, height = img.size  # read from the header: nothing decoded yet
            if width * height > max_pixels:
                raise SettingsError(
                    field,
                    f"the image is {width}x{height} = {width * height} pixels; at most "
                    f"{max_pixels} are allowed (decompression bomb guard)",
                )
            img.seek(0)
            img.load()  # decode once: a truncated or corrupt file fails here, not in the engine
            fmt = (img.format or "png").lower()
    except Image.DecompressionBombError as exc:
        raise SettingsError(field, f"the image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(
            field, f"the file is not an image that can be read; upload a {ALLOWED} image (no "
            "other format is accepted)",
        ) from None  # fmt: skip
    return "jpg" if fmt == "jpeg" else fmt
