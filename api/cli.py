"""The `text2art` command: generate, serve, worker, models, db."""

from __future__ import annotations

import sys
import time
import typing
from pathlib import Path
from typing import Any

import click
import typer

from api.cli_common import fail

# Settings fields whose CLI flag differs from the field name, and list-valued fields.
_FLAG_NAMES = {"clip_models": "clip-model", "make_video": "video", "image_prompts": "image-prompt"}
_MULTIPLE = {"clip_models", "image_prompts"}
# Fields the CLI does not expose as flags (the prompt is an argument).
_NO_FLAG = {"prompts"}


def _settings_options() -> list[click.Option]:
    """One click option per Settings field: its help text, type and choices from `Settings`."""
    from engine import Settings

    options = []
    for name, info in Settings.model_fields.items():
        if name in _NO_FLAG:
            continue
        flag = _flag(name)
        help_text = _help_text(name, info.description or "")
        if name in _MULTIPLE:
            options.append(
                click.Option(
                    [flag, name], multiple=True, metavar=_METAVARS.get(name),
                    help=help_text + " Repeatable.",
                )
            )  # fmt: skip
        elif _is_bool(info.annotation):
            options.append(
                click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
            )
        else:
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            shown = f" [default: {default}]" if default not in (None, [], "") else ""
            options.append(
                click.Option(
                    [flag, name], default=None, type=_click_type(info.annotation),
                    metavar=_metavar(name), help=help_text + shown,
                )
            )  # fmt: skip
    return options


def _flag(name: str) -> str:
    """The command-line flag of a Settings field."""
    return "--" + _FLAG_NAMES.get(name, name.replace("_", "-"))


# Metavars of the fields whose type alone says too little.
_METAVARS = {
    "size": "WIDTHxHEIGHT",
    "pixel_size": "COLUMNSxROWS",
    "palette": "NAME|HEXES",
    "clip_models": "NAME",
    "image_prompts": "FILE",
    "init_image": "FILE",
    "vqgan_model": "NAME",
}


def _metavar(name: str) -> str | None:
    from engine import choices

    named = choices(name)
    if named is not None:
        return "[" + "|".join(named) + "]"
    return _METAVARS.get(name)


def _help_text(name: str, description: str) -> str:
    """The field's description; the model lists come from the catalog, so they stay complete."""
    from engine import VQGAN_MODELS, known_clip_models

    if name == "clip_models":
        return f"{description} Known: {', '.join(known_clip_models())}."
    if name == "vqgan_model":
        return f"{description} Known: {', '.join(VQGAN_MODELS)}."
    return description


def _click_type(annotation: Any) -> click.ParamType:
    """INT or FLOAT for numeric fields (also when optional); text for the rest."""
    kinds = set(typing.get_args(annotation)) | {annotation}
    if int in kinds:
        return click.INT
    if float in kinds:
        return click.FLOAT
    return click.STRING


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or bool in typing.get_args(annotation)


def _collect(ctx: click.Context, prompt: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """Settings values: from `--from PNG` first, then every option given on the command line."""
    from engine import read_png_settings

    values: dict[str, Any] = {}
    source = params.pop("from_png")
    if source:
        try:
            values = read_png_settings(source)
        except (OSError, ValueError) as exc:
            fail(f"--from: {exc}")
    for name, value in params.items():
        given = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        if given and value not in (None, ()):
            values[name] = list(value) if name in _MULTIPLE else value
    if prompt is not None:
        values["prompts"] = prompt
    if not source and prompt is None:
        raise click.UsageError("give a PROMPT (or --from IMAGE.png to reproduce an image)")
    return values


def _run_generate(ctx: click.Context, prompt: str | None, out: str, **params: Any) -> None:
    """Generate an image from a prompt (writes PNG, plus SVG for painting and MP4 with --video)."""
    from engine import Settings, SettingsError, resolve

    resume, save_frames = params.pop("resume"), params.pop("save_frames")
    frames_dir = Path(save_frames) if save_frames else None
    if resume:
        from api.cli_resume import default_output, load_resume

        given = {name: value for name, value in params.items() if _given(ctx, name, value)}
        flags = {name: _flag(name) for name in given} | {"from_png": "--from"}
        state, settings = load_resume(resume, prompt, given, flags)
        out_given = ctx.get_parameter_source("out") == click.core.ParameterSource.COMMANDLINE
        out_path = Path(out) if out_given else default_output(Path(resume))
        _generate_with_progress(settings, out_path, state, Path(resume), frames_dir)
        return
    values = _collect(ctx, prompt, params)
    try:
        settings = resolve(Settings.create(**values))
    except SettingsError as exc:
        fail(str(exc))
    _generate_with_progress(settings, Path(out), frames_dir=frames_dir)


def _given(ctx: click.Context, name: str, value: Any) -> bool:
    """Whether an option was given on the command line (with a value)."""
    source = ctx.get_parameter_source(name)
    return source == click.core.ParameterSource.COMMANDLINE and value not in (None, ())


def _generate_with_progress(
    settings: Any,
    out_path: Path,
    state: Any = None,
    state_file: Path | None = None,
    frames_dir: Path | None = None,
) -> None:
    """Run the loop with a progress bar, then write the outputs and print where they are.

    Ctrl-C stops it between two iterations and saves the run beside the output (`state`, read
    from `state_file`, continues such a run); `frames_dir` gets an animation's every frame."""
    from tqdm import tqdm

    from api.cli_resume import StopOnSignal, finish_resumed, save_stopped
    from engine import Cancelled, SettingsError, generate
    from engine.errors import one_line

    device, models = _prepare(settings)
    video = out_path.with_suffix(".mp4") if settings.wants_video else None
    first = state.iteration if state is not None else 0
    bar = tqdm(
        total=settings.total_iterations,
        initial=first,
        unit="it",
        dynamic_ncols=True,
        file=sys.stderr,
    )
    on_step = _progress(bar, device)

    try:
        with StopOnSignal() as stop:
            result = generate(
                settings,
                on_step=on_step,
                should_stop=stop.event.is_set,
                video_path=video,
                models=models,
                resume=state,
                on_frame=_frame_writer(frames_dir),
            )
    except Cancelled as exc:
        bar.close()
        save_stopped(exc, out_path)
    except (SettingsError, ValueError) as exc:
        bar.close()
        fail(str(exc))
    except RuntimeError as exc:  # missing weights, H.264 encoder, out of memory: one line
        bar.close()
        fail(one_line(exc, typed=False), code=1)
    except KeyboardInterrupt:
        bar.close()
        fail("interrupted", code=130)
    bar.close()
    try:
        _write_outputs(result, out_path)
    except OSError as exc:
        fail(f"cannot write {out_path}: {exc.strerror or exc}", code=1)
    if state_file is not None:
        finish_resumed(state_file)


def _prepare(settings: Any) -> tuple[Any, Any]:
    """The device, and the run's models loaded (every missing file fetched first, at once)."""
    from api.cli_run import fetch_weights, load_models
    from engine import pick_device

    device = pick_device(settings.device)
    if device.type == "cpu":
        click.echo(
            "note: no CUDA GPU found, running on the CPU (slow for full-size models)", err=True
        )
    fetch_weights(settings)  # every missing file at once, before the bar
    return device, load_models(settings, device)


def _frame_writer(directory: Path | None) -> Any:
    """`on_frame` that writes DIRECTORY/frame-0001.png, ... (None without a directory)."""
    if directory is None:
        return None
    from engine import atomic_write

    def write(index: int, picture: Any) -> None:
        path = directory / f"frame-{index + 1:04d}.png"
        atomic_write(path, lambda part: picture.save(part, format="PNG"))

    return write


def _progress(bar: Any, device: Any) -> Any:
    """`on_step` for the bar: the loss twice a second at most, an estimate on the CPU."""
    stamps: list[float] = []
    shown = [0.0]

    def on_step(step: Any) -> None:
        now = time.perf_counter()
        if now - shown[0] >= LOSS_SHOW_SECONDS or step.iteration == step.total:
            shown[0] = now  # reading the loss waits for the GPU: twice a second at most
            bar.set_postfix(loss=f"{step.loss:.3f}", refresh=False)
        bar.update(1)
        stamps.append(time.perf_counter())
        # The first iterations pay for warm-up: estimate from this process's 2nd to 5th.
        if device.type == "cpu" and len(stamps) == 5 and step.iteration < step.total:
            left = (stamps[4] - stamps[1]) / 3 * (step.total - step.iteration)
            bar.write(f"estimated time left on CPU: about {left:.0f} s", file=sys.stderr)

    return on_step


def _write_outputs(result: Any, out_path: Path) -> None:
    from engine import save_outputs

    files = save_outputs(result, out_path.parent, out_path.stem)
    for path in files.values():
        click.echo(f"wrote {path}")
    if len(result.seeds) > 1:
        seeds = ", ".join(str(seed) for seed in result.seeds)
        click.echo(f"seeds {seeds} (the sheet {files['png'].name}, then each picture)")
    else:
        click.echo(f"seed {result.settings.seed}")


LOSS_SHOW_SECONDS = 0.5


def _generate_command() -> click.Command:
    params: list[click.Parameter] = [
        click.Argument(["prompt"], required=False),
        click.Option(["--out", "-o"], default="text2art.png", show_default=True, metavar="PNG",
                     help="Output PNG (the SVG and MP4 go beside it)."),
        click.Option(["--from", "from_png"], default=None, metavar="PNG",
                     help="Reproduce the image whose PNG metadata holds its settings."),
        click.Option(["--save-frames", "save_frames"], default=None, metavar="DIR",
                     help="Also write every frame of an animation as DIR/frame-0001.png, ..."),
        click.Option(["--resume", "resume"], default=None, metavar="STATE",
                     help="Continue a run stopped with Ctrl-C from the state it saved "
                          "(NAME.resume.safetensors beside its output)."),
        *_settings_options(),
    ]  # fmt: skip
    return click.Command(
        "generate",
        callback=click.pass_context(_run_generate),
        params=params,
        help="Generate an image from PROMPT, e.g. 'underwater city | artstation:0.5'.",
    )


def build_cli() -> Any:
    """The click group: typer sub-commands plus `generate`, whose flags come from Settings."""
    from api.cli_models import models_app

    app = typer.Typer(
        help="text2art: type a sentence, get a piece of art.",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,  # plain click help: no '<bool>' type on flags
    )
    app.add_typer(models_app, name="models")

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", is_eager=True, callback=_print_version, help="Show the version."
        ),
    ) -> None:
        """text2art: type a sentence, get a piece of art."""

    @app.command()
    def serve(
        host: str | None = typer.Option(
            None, help="Address to bind (default: $T2A_HOST or 127.0.0.1)."
        ),
        port: int | None = typer.Option(None, help="Port (default: $T2A_PORT or 8000)."),
        share: bool = typer.Option(
            False, "--share", help="Open an ngrok tunnel (needs NGROK_AUTHTOKEN); print its URLs."
        ),
    ) -> None:
        """Run the HTTP service: POST /generate, Swagger UI at /docs."""
        from api.serve import serve as run_service

        run_service(host, port, share)

    from api.cli_worker import register as register_worker

    register_worker(app)
    from api.cli_db import register as register_db

    register_db(app)
    group: Any = typer.main.get_group(app)
    # typer >= 0.29 runs on its own copy of click; a plain click command still plugs in.
    group.add_command(_generate_command())
    return group  # type: ignore[no-any-return]


def _print_version(value: bool) -> None:
    if value:
        from engine import __version__

        click.echo(f"text2art {__version__}")
        raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input is one line on stderr and exit code 2."""
    group = build_cli()
    try:
        group.main(args=argv, prog_name="text2art", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001 - click's and typer's click's exceptions alike
        _exit_for(exc)


def _exit_for(exc: Exception) -> typing.NoReturn:
    """Map a click exception (from click or typer's own copy of it) to one line and an exit code.

    The two copies share class names and attributes but not classes, so match by name.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "Exit" in names:  # --help, --version, typer.Exit
        raise SystemExit(getattr(exc, "exit_code", 0)) from None
    if "Abort" in names:
        fail("aborted", code=130)
    if "NoArgsIsHelpError" in names:  # a bare group: its help, on stderr, as click does
        exc.show()  # type: ignore[attr-defined]
        raise SystemExit(2) from None
    if "UsageError" in names:
        lines = str(exc.format_message()).splitlines()  # type: ignore[attr-defined]
        fail(lines[0] if lines else "bad usage; see --help")
    if "ClickException" in names:
        fail(exc.format_message(), code=exc.exit_code)  # type: ignore[attr-defined]
    raise exc


if __name__ == "__main__":
    main()
