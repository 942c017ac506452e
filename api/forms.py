"""The generation form of the design card, shared by `POST /generate` and `POST /jobs`.

Public names:

- `GenerateForm`: dataclass of the parsed form (setting values and uploads).
- `generate_form`: FastAPI dependency returning a `GenerateForm`; accepts multipart and
  urlencoded bodies. `GenerateFormDep` is its typed alias.
- `form_field(name, **overrides)`: a `Form(...)`/`File(...)` whose description and examples come
  from `engine.Settings.model_fields[name]` (one definition of every option).
- `build_settings(form, config, upload_dir)`: reads and checks the uploads, applies the
  server's overrides and limits, returns resolved `engine.Settings`; raises `FieldError` (422).
- `store_upload(file, field, stem, upload_dir, config)`: read, check and save one image upload.
- `FieldError` (from api.errors): raise it for a bad extra field; it renders as 422.

Extending the form (e.g. `POST /jobs`): write a second dependency with the extra `Form`
parameters; FastAPI merges both into one form body and one OpenAPI schema:

    async def job_form(
        base: GenerateFormDep,
        email: Annotated[str | None, Form(description="Send the result here.")] = None,
    ) -> JobForm:
        if email is not None and "@" not in email:
            raise FieldError("email", "expected an address like name@example.com")
        return JobForm(base, email)
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.config import ApiConfig
from api.errors import FieldError
from engine import Settings, SettingsError
from engine.drawers import list_drawers
from engine.settings import normalise_style

# The card's defaults where they differ from the engine's (the engine lets the quality decide).
CARD_DEFAULTS: dict[str, Any] = {"scale": 2.5}
_CHUNK = 1024 * 1024


def default_of(name: str) -> Any:
    """The form's default for a setting: the card's, else the engine's."""
    if name in CARD_DEFAULTS:
        return CARD_DEFAULTS[name]
    return Settings.model_fields[name].get_default(call_default_factory=True)


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
    """The card's form: setting values as sent, plus the uploaded files (not yet read)."""

    prompts: str
    quality: str
    aspect: str
    scale: float
    style: str
    make_video: bool
    seed: int | None = None
    iterations: int | None = None
    size: str | None = None
    init_image: UploadFile | None = None
    image_prompts: list[UploadFile] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """The non-file fields that were given, as `Settings` keyword arguments."""
        names = ("prompts", "quality", "aspect", "scale", "style", "make_video")
        values = {name: getattr(self, name) for name in names}
        for name in ("seed", "iterations", "size"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return values


async def generate_form(
    request: Request,
    prompts: Annotated[str, form_field("prompts")] = default_of("prompts"),
    seed: Annotated[int | None, form_field("seed", examples=[42])] = None,
    iterations: Annotated[int | None, form_field("iterations")] = None,
    quality: Annotated[str, form_field("quality")] = default_of("quality"),
    aspect: Annotated[str, form_field("aspect")] = default_of("aspect"),
    scale: Annotated[float, form_field("scale")] = default_of("scale"),
    style: Annotated[str, form_field("style")] = default_of("style"),
    make_video: Annotated[bool, form_field("make_video", examples=[False])] = False,
    size: Annotated[str | None, form_field("size", examples=["256x256"])] = None,
    init_image: Annotated[UploadFile | None, form_field("init_image", upload=True)] = None,
    image_prompts: Annotated[
        list[UploadFile] | None, form_field("image_prompts", upload=True)
    ] = None,
) -> GenerateForm:
    """Collect the card's form fields (multipart or urlencoded)."""
    raw = await request.form()  # parsed once by FastAPI already; this reads its cache
    if isinstance(raw.get("prompts"), str):  # FastAPI turns a sent "" into the default
        prompts = str(raw["prompts"])
    return GenerateForm(
        prompts=prompts,
        quality=quality,
        aspect=aspect,
        scale=scale,
        style=style,
        make_video=make_video,
        seed=seed,
        iterations=iterations,
        size=size,
        init_image=init_image,
        image_prompts=list(image_prompts or []),
    )


GenerateFormDep = Annotated[GenerateForm, Depends(generate_form)]


async def build_settings(form: GenerateForm, config: ApiConfig, upload_dir: Path) -> Settings:
    """Checked, resolved settings for the form; uploads are saved under `upload_dir`."""
    values = {**form.values(), **server_overrides(config)}
    check_style(form.style)
    settings = _create(values)  # bad fields fail before any upload is read
    limits = config.limits()
    if len(form.image_prompts) > limits.max_prompts:
        n = len(form.image_prompts)
        raise FieldError("image_prompts", f"{n} images given; at most {limits.max_prompts}")
    try:
        uploads = await _store_uploads(form, config, upload_dir)
        return _resolve(_create({**values, **uploads}) if uploads else settings, config)
    except BaseException:
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise


def server_overrides(config: ApiConfig) -> dict[str, Any]:
    """Settings the server imposes on every request (models, device, cutouts)."""
    overrides = {
        "clip_models": config.clip_models,
        "vqgan_model": config.vqgan_model,
        "device": config.device,
        "cutouts": config.cutouts,
    }
    return {k: v for k, v in overrides.items() if v is not None}


def check_style(value: str) -> None:
    """422 for a style the engine does not know or this server has not installed."""
    try:
        style = normalise_style(value)
    except ValueError as exc:
        raise FieldError("style", str(exc)) from None
    available = list_drawers()
    if style not in available:
        choices = ", ".join(f"'{s}'" for s in available)
        raise FieldError("style", f"style {style!r} is not available here; choose one of {choices}")


def _create(values: dict[str, Any]) -> Settings:
    try:
        return Settings.create(**values)
    except SettingsError as exc:
        raise FieldError(exc.field, exc.message) from None


def _resolve(settings: Settings, config: ApiConfig) -> Settings:
    try:
        return settings.resolve(config.limits())
    except SettingsError as exc:
        raise FieldError(exc.field, exc.message) from None


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
        values["image_prompts"] = [str(p) for p in paths]
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
    return raw.rename(upload_dir / f"{stem}.{fmt}")


def _copy_limited(file: IO[bytes], dest: Path, field: str, max_bytes: int) -> None:
    """Copy at most `max_bytes`; 422 when the upload is empty or larger."""
    size = 0
    with dest.open("wb") as out:
        while chunk := file.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                dest.unlink(missing_ok=True)
                raise FieldError(field, f"the file is over the upload limit of {_human(max_bytes)}")
            out.write(chunk)
    if size == 0:
        dest.unlink(missing_ok=True)
        raise FieldError(field, "the file is empty; upload a PNG, JPEG or WebP image")


def _human(n_bytes: int) -> str:
    mib = 1024 * 1024
    return f"{n_bytes // mib} MB" if n_bytes % mib == 0 else f"{n_bytes} bytes"


def check_image(path: Path, field: str, max_pixels: int) -> str:
    """The image's format as a file extension; 422 for non-images and decompression bombs."""
    try:
        with Image.open(path) as img:
            width, height = img.size  # read from the header: nothing decoded yet
            if width * height > max_pixels:
                raise FieldError(
                    field,
                    f"the image is {width}x{height} = {width * height} pixels; at most "
                    f"{max_pixels} are allowed (decompression bomb guard)",
                )
            img.load()  # decode once: a truncated or corrupt file fails here, not in the engine
            fmt = (img.format or "png").lower()
    except Image.DecompressionBombError as exc:
        raise FieldError(field, f"the image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FieldError):
            raise
        raise FieldError(
            field, "the file is not an image that can be read (use PNG, JPEG or WebP)"
        ) from None
    return "jpg" if fmt == "jpeg" else fmt
