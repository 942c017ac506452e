"""The local artifact store (`api.storage_local.LocalArtifactStore`): results, previews, uploads,
public settings, atomicity, delete, serving; the names every store shares (`api.storage`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import a_result
from PIL import Image

from api.storage import (
    ArtifactStore,
    ServedFile,
    artifact_name,
    new_job_id,
    output_url,
    valid_name,
    variation_keys,
)
from api.storage_local import LocalArtifactStore
from engine import Result


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    artifacts = LocalArtifactStore(tmp_path / "outputs")
    artifacts.prepare()
    return artifacts


def test_save_result_keeps_png_svg_and_video_and_serves_them(store: ArtifactStore) -> None:
    job_id = new_job_id()
    svg = '<svg xmlns="http://www.w3.org/2000/svg"/>'
    kept = store.save_result(a_result(store, job_id, svg=svg, video=True), job_id)
    assert sorted(kept) == ["mp4", "png", "svg"] and sorted(store.kept(job_id)) == sorted(kept)
    png = store.path(job_id, "png")
    assert png is not None and png.parent == store.root
    with Image.open(png) as img:
        assert img.size == (32, 32) and img.text["seed"] == "3"
        assert str(store.root) not in img.text["text2art:settings"]  # no server path inside
    assert store.read(job_id, "svg") == svg.encode()
    assert store.read(job_id, "mp4") == b"fake mp4"
    assert store.path(job_id, "exe") is None and store.path("not-an-id", "png") is None
    assert store.path(new_job_id(), "png") is None  # nothing kept under another id


def test_public_settings_hold_no_server_paths(store: ArtifactStore) -> None:
    job_id = new_job_id()
    result = a_result(store, job_id)
    shown = store.public_settings(result.settings)
    assert shown.init_image == f"uploads/{job_id}/init.png"
    outside = result.settings.model_copy(update={"image_prompts": ["/etc/secret/p.png"]})
    assert store.public_settings(outside).image_prompts == ["p.png"]


def test_previews_are_replaced_read_and_removed(store: ArtifactStore) -> None:
    job_id = new_job_id()
    assert store.read_preview(job_id) is None
    store.save_preview(job_id, Image.new("RGB", (4, 4), "red"))
    first = store.read_preview(job_id)
    store.save_preview(job_id, Image.new("RGB", (4, 4), "green"))
    second = store.read_preview(job_id)
    assert first and second and first != second
    store.remove_preview(job_id)
    assert store.read_preview(job_id) is None


class _BrokenImage:
    """Writes half a PNG, checks nobody can see it under the real name, then fails."""

    def __init__(self, store: ArtifactStore, job_id: str, ext: str):
        self.store, self.job_id, self.ext = store, job_id, ext
        self.seen: list[bytes | None] = []

    def save(self, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"\x89PNG half")
        self.seen.append(self._visible())
        raise OSError("disk full")

    def _visible(self) -> bytes | None:
        if self.ext == "preview":
            return self.store.read_preview(self.job_id)
        return self.store.read(self.job_id, self.ext)


def test_writes_are_atomic_no_partial_file_is_ever_visible(store: ArtifactStore) -> None:
    job_id = new_job_id()
    result = a_result(store, job_id)
    store.save_result(result, job_id)
    before = store.read(job_id, "png")
    broken = _BrokenImage(store, job_id, "png")
    with pytest.raises(OSError, match="disk full"):
        store.save_result(Result(broken, result.settings, [1.0], 0.1), job_id)  # type: ignore[arg-type]
    assert broken.seen == [before] and store.read(job_id, "png") == before  # the old file, whole
    store.save_preview(job_id, Image.new("RGB", (4, 4)))
    preview = store.read_preview(job_id)
    broken = _BrokenImage(store, job_id, "preview")
    with pytest.raises(OSError, match="disk full"):
        store.save_preview(job_id, broken)  # type: ignore[arg-type]
    assert broken.seen == [preview] and store.read_preview(job_id) == preview
    leftovers = [p.name for p in store.root.rglob("*") if p.name.endswith(".part")]
    assert leftovers == []


def test_delete_leaves_nothing_of_the_job(store: ArtifactStore) -> None:
    job_id, other = new_job_id(), new_job_id()
    store.save_result(a_result(store, job_id, svg="<svg/>", video=True), job_id)
    store.save_preview(job_id, Image.new("RGB", (4, 4)))
    store.save_result(a_result(store, other), other)
    store.delete(job_id)
    left = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert [name for name in left if job_id in name] == []
    assert store.kept(job_id) == [] and store.read_preview(job_id) is None
    assert store.kept(other) == ["png"]  # another job's files stay
    store.delete(job_id)  # deleting twice is harmless


def test_job_ids_and_names() -> None:
    job_id = new_job_id()
    assert valid_name(job_id, "png") and valid_name(job_id, "mp4") and valid_name(job_id, "svg")
    assert not valid_name(job_id, "exe") and not valid_name("../" + job_id[3:], "png")
    assert new_job_id() != job_id


def test_variations_are_kept_one_file_each_and_served_by_name(store: ArtifactStore) -> None:
    job_id = new_job_id()
    kept = store.save_result(a_result(store, job_id, svg="<svg/>", variations=3), job_id)
    assert kept == ["png", "svg", "1.png", "1.svg", "2.png", "2.svg", "3.png", "3.svg"]
    assert store.kept(job_id) == kept
    with Image.open(store.root / f"{job_id}.png") as sheet:  # the contact sheet, 2 x 2
        assert (
            sheet.size == (68, 68)
            and json.loads(sheet.text["text2art:settings"])["variations"] == 3
        )
    for k in (1, 2, 3):
        path = store.path(f"{job_id}-{k}", "png")
        assert path == store.root / f"{job_id}-{k}.png"
        with Image.open(path) as picture:
            assert picture.size == (32, 32) and picture.getpixel((0, 0)) == (40 * (k - 1), 0, 0)
            solo = json.loads(picture.text["text2art:settings"])
            assert (solo["seed"], solo["variations"]) == (3 + k - 1, 1)
        assert store.read(f"{job_id}-{k}", "svg") == f'<svg id="{k - 1}"/>'.encode()
    files = store.local_files(job_id, ["1.png", "3.png", "../x.png"])
    assert files == {
        "1.png": store.root / f"{job_id}-1.png",
        "3.png": store.root / f"{job_id}-3.png",
    }
    store.discard(job_id)
    assert store.kept(job_id) == [] and not list(store.root.glob(f"{job_id}*"))


@pytest.mark.parametrize(
    ("name", "ok"),
    [("-1", True), ("-4", True), ("", True), ("-0", False), ("-5", False), ("-12", False),
     ("-", False), ("_1", False), ("-1-2", False)],
)  # fmt: skip
def test_output_names_are_an_id_and_maybe_a_picture_number(name: str, ok: bool) -> None:
    job_id = new_job_id()
    assert valid_name(f"{job_id}{name}", "png") is ok
    assert valid_name(f"{job_id}{name}", "exe") is False


def test_output_keys_map_to_file_names() -> None:
    job_id = new_job_id()
    assert artifact_name("result", job_id, "png") == f"{job_id}.png"
    assert artifact_name("result", job_id, "2.svg") == f"{job_id}-2.svg"
    assert artifact_name("result", job_id, "4.png") == f"{job_id}-4.png"
    assert artifact_name("result", f"{job_id}-4", "png") == f"{job_id}-4.png"  # a served name
    assert output_url("http://x/y", job_id, "3.png") == f"http://x/y/outputs/{job_id}-3.png"
    keys = ["png", "mp4", "2.png", "1.png", "1.svg", "svg"]
    assert variation_keys(keys) == {1: "1.png", 2: "2.png"}
    assert list(variation_keys(keys)) == [1, 2]  # in picture order
    assert variation_keys(keys, "svg") == {1: "1.svg"} and variation_keys(["png"]) == {}


def test_the_interface_is_abstract_and_each_backend_implements_all_of_it() -> None:
    from api.storage_s3 import S3ArtifactStore

    with pytest.raises(TypeError, match="abstract"):
        ArtifactStore()  # type: ignore[abstract]
    operations = {
        "prepare", "describe", "write_marker", "read_marker", "delete_marker", "save_result",
        "video_path", "kept", "path", "read", "serve", "save_preview", "read_preview",
        "remove_preview", "save_state", "read_state", "remove_state", "upload_dir",
        "commit_uploads", "localize", "public_settings", "delete", "discard", "save_step", "steps",
    }  # fmt: skip
    assert ArtifactStore.__abstractmethods__ == operations
    for backend in (LocalArtifactStore, S3ArtifactStore):
        assert backend.__abstractmethods__ == frozenset()
        assert backend.__bases__ == (ArtifactStore,)  # siblings: neither inherits the other
        assert operations <= set(vars(backend)), backend  # each written by the backend itself


def test_every_artifact_lives_where_its_name_says(store: LocalArtifactStore) -> None:
    job_id = new_job_id()
    store.commit_uploads(job_id)  # a directory: nothing to carry
    result = a_result(store, job_id, svg="<svg/>", video=True, variations=2)
    kept = store.save_result(result, job_id)
    store.save_preview(job_id, Image.new("RGB", (4, 4)))
    store.write_marker("m", b"1")
    names = {artifact_name("result", job_id, key) for key in kept}
    names |= {artifact_name("preview", job_id), artifact_name("marker", "m")}
    names.add(artifact_name("uploads", job_id, "init.png"))
    files = {p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()}
    assert files == names and store.upload_dir(job_id) == store.file(f"uploads/{job_id}")
    with pytest.raises(ValueError, match="choose result, preview, state, uploads, marker or st"):
        artifact_name("thumbnail", job_id)  # type: ignore[arg-type]


def test_serve_gives_the_local_file_or_nothing(store: LocalArtifactStore) -> None:
    job_id = new_job_id()
    store.save_result(a_result(store, job_id, svg="<svg/>", variations=2), job_id)
    served = store.serve(f"{job_id}-2", "svg", "bytes=0-3")  # Range: answered by the web layer
    assert served == ServedFile(store.root / f"{job_id}-2.svg", "image/svg+xml", f"{job_id}-2.svg")
    assert store.serve(job_id, "mp4", None) is None  # no video was made
    assert store.serve("../" + job_id[3:], "png", None) is None
