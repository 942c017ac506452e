"""The `text2art` command: generate, serve, worker, models, db."""

from __future__ import annotations

import sys
import typing
from functools import partial
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
            if isinstance(default, list):  # a comma-separated list (augments)
                default = ",".join(default)
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
    "augments": "NAMES",
    "stroke_width": "MIN,MAX",
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
    batch = params.pop("prompts_file")
    if batch:  # one picture per line of a file (api.cli_batch)
        from api.cli_batch import run_prompts_file

        run = partial(_generate_with_progress, frames_dir=frames_dir)
        run_prompts_file(Path(batch), prompt, resume, _collect(ctx, "", params), Path(out), run)
        return
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
    from api.cli_run import frame_writer, prepare, progress, step_writer
    from engine import Cancelled, SettingsError, generate
    from engine.errors import one_line

    device, models = prepare(settings)
    video = out_path.with_suffix(".mp4") if settings.wants_video else None
    first = state.iteration if state is not None else 0
    bar = tqdm(total=settings.total_iterations, initial=first, unit="it", dynamic_ncols=True,
               file=sys.stderr)  # fmt: skip
    on_step = progress(bar, device)

    try:
        with StopOnSignal() as stop:
            result = generate(
                settings,
                on_step=on_step,
                should_stop=stop.event.is_set,
                video_path=video,
                models=models,
                resume=state,
                on_frame=frame_writer(frames_dir),
                on_save=step_writer(out_path, settings.save_every),
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


def _write_outputs(result: Any, out_path: Path) -> None:
    from engine import save_outputs

    files = save_outputs(result, out_path.parent, out_path.stem)
    for path in files.values():
        click.echo(f"wrote {path}")
    if every := result.settings.save_every:  # the pictures in a folder named after the output
        saved, folder = len(result.losses) // every, out_path.with_suffix("")
        click.echo(f"wrote {folder}/step-*.png ({saved} pictures, one every {every} iterations)")
    if len(result.seeds) > 1:
        seeds = ", ".join(str(seed) for seed in result.seeds)
        click.echo(f"seeds {seeds} (the sheet {files['png'].name}, then each picture)")
    else:
        click.echo(f"seed {result.settings.seed}")


def _generate_command() -> click.Command:
    params: list[click.Parameter] = [
        click.Argument(["prompt"], required=False),
        click.Option(["--out", "-o"], default="text2art.png", show_default=True, metavar="PNG",
                     help="Output PNG (the SVG and MP4 go beside it)."),
        click.Option(["--from", "from_png"], default=None, metavar="PNG",
                     help="Reproduce the image whose PNG metadata holds its settings."),
        click.Option(["--save-frames", "save_frames"], default=None, metavar="DIR",
                     help="Also write every frame of an animation as DIR/frame-0001.png, ..."),
        click.Option(["--prompts-file", "prompts_file"], default=None, metavar="FILE", help="One "
                     "picture per non-empty line of FILE, numbered OUT-1.png, OUT-2.png, ..."),
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
        short_help="Generate an image from PROMPT (a PNG; SVG and MP4 beside it).",
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
        clip_model: list[str] = typer.Option(  # noqa: B008 - typer's way to declare it
            [],
            "--clip-model",
            metavar="NAME",
            help="CLIP model for every request, e.g. shapes (the bundled offline models); "
            "repeatable (default: $T2A_CLIP_MODELS, else each quality's models).",
        ),
    ) -> None:
        """Run the HTTP service: POST /generate, Swagger UI at /docs."""
        from api.cli_common import load_config
        from api.serve import serve as run_service

        config = load_config(**({"clip_models": clip_model} if clip_model else {}))
        run_service(host, port, share, config)

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
        click.echo(f"text2art {version()}")
        raise SystemExit(0)


def version() -> str:
    """The installed text2art's version, read without importing the engine (and so torch)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("text2art")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from engine import __version__

        return __version__


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input is one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:  # before building the commands: their flags import torch
        _print_version(True)
    group = build_cli()
    try:
        group.main(args=args, prog_name="text2art", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001 - click's and typer's click's exceptions alike
        _exit_for(exc, args)


def _no_such_option(exc: Any, args: list[str]) -> str:
    """click's "No such option" with a suggestion only for a near spelling (click's own compares
    the dashes too: '--colour' got '--out'), and the `--` hint for a prompt that starts with '-'."""
    import difflib

    name = str(exc.option_name)
    message = f"No such option '{name}'"
    options = {str(o).lstrip("-"): str(o) for o in exc.possibilities or ()}
    near = difflib.get_close_matches(name.lstrip("-"), list(options), n=1, cutoff=0.75)
    if near:
        message += f"; did you mean '{options[near[0]]}'?"
    prompt = next((a for a in args if a.startswith(name) and " " in a), None)
    if prompt is not None or not name.startswith("--"):
        example = prompt or "-PROMPT"
        message += (
            f"; a prompt that starts with '-' goes after '--': text2art generate -- '{example}'"
        )
    return message


def _exit_for(exc: Exception, args: list[str] | None = None) -> typing.NoReturn:
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
    if "NoSuchOption" in names:
        fail(_no_such_option(exc, args or []))
    if "UsageError" in names:
        lines = str(exc.format_message()).splitlines()  # type: ignore[attr-defined]
        fail(lines[0] if lines else "bad usage; see --help")
    if "ClickException" in names:
        fail(exc.format_message(), code=exc.exit_code)  # type: ignore[attr-defined]
    raise exc


if __name__ == "__main__":
    main()
