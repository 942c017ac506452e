"""Weights registry, cache directory and downloads, against a local HTTP server (no internet)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from servers import free_port
from typer.testing import CliRunner

from api.cli_models import models_app
from engine import catalog, weights
from engine.catalog import ClipEntry, VqganEntry
from engine.errors import WeightsError
from engine.weights import Source, WeightFile


def _torch_bytes(legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    state = {"w": torch.arange(300, dtype=torch.float32)}
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


CKPT = _torch_bytes()
YAML = yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel", "params": {}}}).encode()
HTML = b"<!DOCTYPE html><html><body>This link has expired</body></html>"


# -- a local HTTP server ---------------------------------------------------------------------


@dataclass
class State:
    """What the server serves and how; every request is recorded."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True  # honour Range requests
    drop: bool = False  # send half the body, then close the connection
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # path, Range, status


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        name, rng = self.path.lstrip("/"), self.headers.get("Range")
        data = self.state.files.get(name)
        if data is None:
            self._reply(404, b"not found", rng)
            return
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        start = int(match.group(1)) if match and self.state.ranges else 0
        if start >= len(data) > 0:
            self._reply(416, b"", rng, {"Content-Range": f"bytes */{len(data)}"})
            return
        headers = {"ETag": '"v1"'}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        cut = len(body) // 2 if self.state.drop else len(body)
        self._reply(206 if start else 200, body, rng, headers, cut)
        self.close_connection = self.state.drop

    def _reply(
        self, status: int, body: bytes, rng: str | None, headers: dict | None = None, cut: int = -1
    ) -> None:
        self.state.requests.append((self.path, rng, status))
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut < 0 else body[:cut])


@dataclass
class Server:
    state: State
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture
def server() -> Iterator[Server]:
    state = State(files={"m.pt": CKPT, "model.yaml": YAML, "expired.pt": HTML})
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield Server(state, f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused_url() -> str:
    """A URL on a port where nothing listens: connection refused, like a machine offline."""
    return f"http://127.0.0.1:{free_port()}/ViT-B-32.pt"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEXT2ART_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.glob(dest.name + "*"))


# -- download ----------------------------------------------------------------------------------


def test_download_streams_with_progress(server: Server, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    dest = weights.download(server.url("m.pt"), tmp_path / "m.pt", progress=_record(calls))
    assert dest.read_bytes() == CKPT
    assert calls[0] == (0, len(CKPT)) and calls[-1] == (len(CKPT), len(CKPT))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert _leftovers(dest) == ["m.pt"]


def _record(calls: list[tuple[int, int | None]]) -> weights.Progress:
    return lambda done, total: calls.append((done, total))


def test_truncated_transfer_leaves_no_final_file_then_resumes(
    server: Server, tmp_path: Path
) -> None:
    dest = tmp_path / "m.pt"
    server.state.drop = True
    with pytest.raises(WeightsError, match=r"connection closed after \d+ of \d+ bytes"):
        weights.download(server.url("m.pt"), dest)
    half = len(CKPT) // 2
    assert not dest.exists()
    assert Path(f"{dest}.part").read_bytes() == CKPT[:half]

    server.state.drop = False
    calls: list[tuple[int, int | None]] = []
    weights.download(server.url("m.pt"), dest, progress=_record(calls))
    assert server.state.requests[-1] == ("/m.pt", f"bytes={half}-", 206)
    assert calls[0] == (half, len(CKPT))
    assert dest.read_bytes() == CKPT
    assert _leftovers(dest) == ["m.pt"]


def test_server_without_range_support_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pt"
    server.state.drop = True
    with pytest.raises(WeightsError):
        weights.download(server.url("m.pt"), dest)
    server.state.drop, server.state.ranges = False, False
    weights.download(server.url("m.pt"), dest)
    path, rng, status = server.state.requests[-1]
    assert rng is not None and status == 200  # asked to resume, got the whole file
    assert dest.read_bytes() == CKPT


def test_partial_file_from_another_url_is_not_resumed(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pt"
    Path(f"{dest}.part").write_bytes(b"PK\x03\x04 other mirror's bytes")
    Path(f"{dest}.part.json").write_text(json.dumps({"url": "http://elsewhere/m.pt"}))
    weights.download(server.url("m.pt"), dest)
    assert server.state.requests == [("/m.pt", None, 200)]
    assert dest.read_bytes() == CKPT


def test_partial_file_longer_than_the_file_restarts(server: Server, tmp_path: Path) -> None:
    dest, url = tmp_path / "m.pt", server.url("m.pt")
    Path(f"{dest}.part").write_bytes(CKPT + b"junk")
    Path(f"{dest}.part.json").write_text(json.dumps({"url": url}))
    weights.download(url, dest)
    assert [s for _, _, s in server.state.requests] == [416, 200]
    assert dest.read_bytes() == CKPT


def test_html_error_page_is_rejected(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pt"
    with pytest.raises(WeightsError, match="HTML") as err:
        weights.download(server.url("expired.pt"), dest)
    assert str(dest) in str(err.value) and "\n" not in str(err.value)
    assert _leftovers(dest) == []


def test_mirror_fallback(server: Server, tmp_path: Path) -> None:
    urls = [server.url("gone.pt"), server.url("expired.pt"), server.url("m.pt")]
    dest = weights.download(urls, tmp_path / "m.pt")
    assert dest.read_bytes() == CKPT
    assert [(p, s) for p, _, s in server.state.requests] == [
        ("/gone.pt", 404),
        ("/expired.pt", 200),
        ("/m.pt", 200),
    ]


def test_sha256_is_checked(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "m.pt"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        weights.download(server.url("m.pt"), dest, sha256="0" * 64)
    assert _leftovers(dest) == []
    good = hashlib.sha256(CKPT).hexdigest()
    assert weights.download(server.url("m.pt"), dest, sha256=good).read_bytes() == CKPT


def test_per_mirror_sha256_applies_to_that_mirror_only(server: Server, tmp_path: Path) -> None:
    bad_first = [Source(server.url("m.pt"), sha256="0" * 64), Source(server.url("m.pt"))]
    assert weights.download(bad_first, tmp_path / "m.pt").read_bytes() == CKPT


@pytest.mark.parametrize(
    ("expected", "ok"),
    [
        (len(CKPT), True),
        (len(CKPT) + 1, False),
        ((1, 10**9), True),
        ((len(CKPT) + 1, 10**9), False),
    ],
)
def test_expected_size(
    server: Server, tmp_path: Path, expected: weights.SizeCheck, ok: bool
) -> None:
    dest = tmp_path / "m.pt"
    if ok:
        assert weights.download(server.url("m.pt"), dest, expected).read_bytes() == CKPT
    else:
        with pytest.raises(WeightsError, match="bytes, expected"):
            weights.download(server.url("m.pt"), dest, expected)
        assert _leftovers(dest) == []


def test_yaml_must_name_a_model_target(server: Server, tmp_path: Path) -> None:
    assert weights.download(server.url("model.yaml"), tmp_path / "a.yaml").read_bytes() == YAML
    server.state.files["bad.yaml"] = b"data:\n  target: x\n"
    with pytest.raises(WeightsError, match=r"model\.target"):
        weights.download(server.url("bad.yaml"), tmp_path / "b.yaml")
    assert not (tmp_path / "b.yaml").exists()


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.zeros(3)})


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("a.pt", CKPT, None),
        ("a.ckpt", _torch_bytes(legacy=True), None),
        ("a.ckpt", CKPT[: len(CKPT) - 30], "truncated zip"),
        ("a.pt", b"hello world", "not a PyTorch checkpoint"),
        ("a.ckpt", b'<?xml version="1.0"?><Error>PublicAccessNotPermitted</Error>', "HTML/XML"),
        ("a.yaml", YAML, None),
        ("a.yaml", b"model: [unclosed", "not valid YAML"),
        ("a.safetensors", _safetensors_bytes(), None),
        ("a.safetensors", b"\xff" * 16, "bad header length"),
    ],
)
def test_check_content(tmp_path: Path, name: str, data: bytes, error: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    if error is None:
        weights.check_content(path)
    else:
        with pytest.raises(Exception, match=error):
            weights.check_content(path)


def test_offline_error_is_one_line_naming_file_urls_and_path(
    refused_url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "ViT-B-32.pt"
    with pytest.raises(WeightsError) as err:
        weights.download([refused_url, refused_url + "?mirror"], dest)
    message = str(err.value)
    assert "\n" not in message
    assert "ViT-B-32.pt" in message and str(dest) in message
    assert f"{refused_url} or {refused_url}?mirror" in message
    assert "mirror 1:" in message and "mirror 2:" in message


# -- cache and registry ------------------------------------------------------------------------


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TEXT2ART_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.cache_dir() == tmp_path / "home" / ".cache" / "text2art"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "text2art"
    monkeypatch.setenv("TEXT2ART_CACHE", str(tmp_path / "mine"))
    assert weights.cache_dir() == tmp_path / "mine"


def _clip_registry(*urls: str) -> dict[str, ClipEntry]:
    spec = WeightFile("ViT-B-32.pt", tuple(Source(u) for u in urls), len(CKPT), (1, 10**6))
    return {"ViT-B/32": dataclasses.replace(catalog.CLIP_MODELS["ViT-B/32"], weights=spec)}


def _vqgan_registry(server: Server) -> dict[str, VqganEntry]:
    cfg = WeightFile("tiny.yaml", (Source(server.url("model.yaml")),), len(YAML), (1, 10**6))
    ckpt = WeightFile("tiny.ckpt", (Source(server.url("m.pt")),), len(CKPT), (1, 10**6))
    return {"tiny": VqganEntry("tiny", 16, False, cfg, ckpt)}


def test_clip_checkpoint_downloads_once_into_the_cache(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "CLIP_MODELS", _clip_registry(server.url("m.pt")))
    path = catalog.clip_checkpoint("ViT-B/32")
    assert path == cache / "clip" / "ViT-B-32.pt" and path.read_bytes() == CKPT
    assert catalog.clip_checkpoint("ViT-B/32") == path
    assert len(server.state.requests) == 1  # the second call used the cache


def test_clip_checkpoint_offline(
    refused_url: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "CLIP_MODELS", _clip_registry(refused_url))
    dest = cache / "clip" / "ViT-B-32.pt"
    with pytest.raises(WeightsError) as err:
        catalog.clip_checkpoint("ViT-B/32")
    message = str(err.value)
    assert message.startswith("CLIP ViT-B/32 weights missing: could not download ViT-B-32.pt")
    assert refused_url in message and message.endswith(f"put it at {dest}")
    assert "\n" not in message
    with pytest.raises(WeightsError, match=f"download {refused_url} and put it at {dest}$"):
        catalog.clip_checkpoint("ViT-B/32", download=False)
    # A file the user put there by hand is used without any network.
    dest.write_bytes(CKPT)
    assert catalog.clip_checkpoint("ViT-B/32") == dest


def test_cached_error_page_is_reported(
    refused_url: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "CLIP_MODELS", _clip_registry(refused_url))
    dest = cache / "clip" / "ViT-B-32.pt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(HTML)
    with pytest.raises(WeightsError, match=f"{dest} is unusable .*HTML.*; delete it"):
        catalog.clip_checkpoint("ViT-B/32")


def test_vqgan_paths(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "VQGAN_MODELS", _vqgan_registry(server))
    config, ckpt = catalog.vqgan_paths("tiny")
    assert config == cache / "vqgan" / "tiny.yaml" and config.read_bytes() == YAML
    assert ckpt == cache / "vqgan" / "tiny.ckpt" and ckpt.read_bytes() == CKPT


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-X'; choose one of ViT-B/32"):
        catalog.clip_checkpoint("ViT-X")
    with pytest.raises(ValueError, match="unknown VQGAN model 'x'; .*imagenet_f16_16384"):
        catalog.vqgan_paths("x")
    with pytest.raises(ValueError, match="unknown model kind 'gan'; choose one of clip, vqgan"):
        catalog.model_files("RN50", "gan")


def test_list_models_reports_the_cache(cache: Path) -> None:
    (cache / "clip").mkdir(parents=True)
    (cache / "clip" / "RN50.pt").write_bytes(CKPT)
    rows = {(m.kind, m.name): m for m in catalog.list_models()}
    downloaded = {("clip", n) for n, e in catalog.CLIP_MODELS.items() if e.weights}
    downloaded |= {("vqgan", n) for n, e in catalog.VQGAN_MODELS.items() if e.checkpoint}
    assert ("clip", "RN50") in downloaded and ("vqgan", "imagenet_f16_16384") in downloaded
    assert set(rows) == downloaded | {("clip", "shapes"), ("vqgan", "shapes")}
    for kind in ("clip", "vqgan"):  # shipped in the package, outside the cache
        shapes = rows[kind, "shapes"]
        assert shapes.bundled and shapes.cached and shapes.path.is_file()
        assert cache not in shapes.path.parents and 0 < shapes.size <= 5 * 1024 * 1024
    assert not rows["clip", "RN50"].bundled
    assert rows["clip", "RN50"].cached and rows["clip", "RN50"].path == cache / "clip" / "RN50.pt"
    assert not rows["clip", "ViT-B/32"].cached
    assert rows["vqgan", "imagenet_f16_16384"].path.name == "imagenet_f16_16384.ckpt"
    assert 900e6 < rows["vqgan", "imagenet_f16_16384"].size < 1100e6


def test_registry_matches_open_clip_and_the_engine() -> None:
    archs = {n: e.arch for n, e in catalog.CLIP_MODELS.items() if e.arch is not None}
    assert archs["ViT-B/32"] == "ViT-B-32-quickgelu"  # OpenAI weights need QuickGELU
    assert all(a.endswith("-quickgelu") for a in archs.values())
    ARCHITECTURES = archs
    # open_clip's model configs, found without importing open_clip (seconds on this machine).
    found = importlib.util.find_spec("open_clip")
    assert found is not None and found.submodule_search_locations
    configs = Path(found.submodule_search_locations[0]) / "model_configs"
    assert all((configs / f"{arch}.json").is_file() for arch in ARCHITECTURES.values())
    assert {n: v.factor for n, v in catalog.VQGAN_MODELS.items()}["openimages_f8_8192"] == 8
    assert [n for n, v in catalog.VQGAN_MODELS.items() if v.gumbel] == ["openimages_f8_8192"]
    assert catalog.DEFAULT_VQGAN in catalog.VQGAN_MODELS
    clips = [c.weights for c in catalog.CLIP_MODELS.values() if c.weights is not None]
    assert len(clips) == len(archs)  # every open_clip model downloads its weights
    for file in clips:
        openai = file.sources[0]
        assert openai.sha256 == openai.url.split("/")[-2]  # OpenAI put the digest in the path
    files = list(clips)
    files += [
        f for v in catalog.VQGAN_MODELS.values() for f in (v.config, v.checkpoint) if f is not None
    ]
    for spec in files:
        assert len(spec.sources) >= 2, spec.filename
        assert spec.size_range[0] <= spec.size <= spec.size_range[1]


# -- the `text2art models` commands ------------------------------------------------------------


def test_cli_list(cache: Path) -> None:
    (cache / "clip").mkdir(parents=True)
    (cache / "clip" / "RN50.pt").write_bytes(CKPT)
    result = CliRunner().invoke(models_app, ["list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"cache: {cache} (set TEXT2ART_CACHE to move it)"
    assert lines[1].split() == ["KIND", "NAME", "SIZE", "CACHED", "PATH"]
    rn50 = re.escape(str(cache / "clip" / "RN50.pt"))
    assert re.search(rf"^clip +RN50 +244 MB +yes +{rn50}$", result.stdout, re.MULTILINE)
    assert re.search(r"vqgan +imagenet_f16_16384 +980 MB +no ", result.stdout)
    assert re.search(
        r"^clip +shapes +\S+ MB +bundled +\S+shapes_clip.safetensors$", result.stdout, re.M
    )


def test_cli_download_of_a_bundled_model_needs_no_network(cache: Path) -> None:
    result = CliRunner().invoke(models_app, ["download", "shapes", "--kind", "vqgan"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"bundled with text2art, nothing to download: \S+shapes_vqgan.safetensors\n", result.stdout
    )
    both = CliRunner().invoke(models_app, ["download", "shapes"])
    assert both.exit_code == 0 and both.stdout.count("bundled with text2art") == 2
    assert not cache.exists() or not any(cache.iterdir())


def test_cli_download(server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "CLIP_MODELS", _clip_registry(server.url("m.pt")))
    monkeypatch.setattr(catalog, "VQGAN_MODELS", _vqgan_registry(server))
    result = CliRunner().invoke(models_app, ["download", "ViT-B/32"])
    path = cache / "clip" / "ViT-B-32.pt"
    assert result.exit_code == 0, result.output
    assert result.stdout == f"downloaded: {path}\n"
    assert "ViT-B-32.pt" in result.stderr  # the progress bar
    assert path.read_bytes() == CKPT
    again = CliRunner().invoke(models_app, ["download", "ViT-B/32", "--kind", "clip"])
    assert (again.exit_code, again.stdout) == (0, f"cached: {path}\n")
    vq = CliRunner().invoke(models_app, ["download", "tiny"])
    assert vq.exit_code == 0 and vq.stdout.count("downloaded: ") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["download", "nope"], "error: unknown model 'nope'; choose one of ViT-B/32"),
        (["download", "RN50", "--kind", "vqgan"], "error: unknown VQGAN model 'RN50'"),
        (["download", "RN50", "--kind", "gan"], "error: unknown model kind 'gan'"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(models_app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_cli_download_failure_exits_1(
    refused_url: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "CLIP_MODELS", _clip_registry(refused_url))
    result = CliRunner().invoke(models_app, ["download", "ViT-B/32"])
    assert result.exit_code == 1
    last = result.stderr.splitlines()[-1]  # the lines before it are the progress bar, if any
    assert last.startswith("error: CLIP ViT-B/32 weights missing")
    assert last.endswith(f"put it at {cache / 'clip' / 'ViT-B-32.pt'}")


def test_text2art_models_exit_code_survives_the_main_entry_point() -> None:
    from api.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["models", "download", "nope"])
    assert exc.value.code == 2


def test_cli_download_reports_an_unusable_cached_file(cache: Path) -> None:
    dest = cache / "clip" / "RN50.pt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(HTML)
    result = CliRunner().invoke(models_app, ["download", "RN50"])
    assert result.exit_code == 1
    assert result.stderr == f"error: CLIP RN50 weights: {dest} is unusable " + (
        "(got an HTML/XML page, not the file (the link may be dead or need a login)); delete it\n"
    )
