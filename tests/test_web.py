"""The web page in a real browser: Playwright drives Debian's Chromium against a real uvicorn
serving `create_app` with the tiny models. Screenshots go to `test-output/web/`."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import jobs_config, png_bytes, running

from engine import ModelCache
from engine.errors import WeightsError

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "web"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium); `.ci/run` installs it",
        allow_module_level=True,
    )


def tiny_service_config(output_dir: Path, **overrides: Any) -> Any:
    """The service on the tiny models: small, fast runs and frequent previews."""
    return jobs_config(
        output_dir,
        vqgan_model="tiny-random",
        cutouts=2,
        preview_every=2,
        progress_interval=0.1,
        **overrides,
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, models: Any) -> Iterator[str]:
    from api.app import create_app

    app = create_app(tiny_service_config(tmp_path_factory.mktemp("web-service")), models=models)
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module", autouse=True)
def shots() -> Path:
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    return SHOTS


@contextmanager
def open_page(browser: Any, base_url: str, width: int = 1280) -> Iterator[Any]:
    """The page of the service at `base_url`, ready; no JavaScript error may happen on it."""
    context = browser.new_context(viewport={"width": width, "height": 900}, base_url=base_url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/")
    page.wait_for_selector("html[data-ready]")
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    with open_page(browser, base_url) as page:
        yield page


@pytest.fixture
def limited_page(browser: Any, tmp_path: Path, models: Any) -> Iterator[Any]:
    """The page of a service that makes at most 2 pictures per job (T2A_MAX_VARIATIONS=2)."""
    from api.app import create_app

    app = create_app(tiny_service_config(tmp_path, max_variations=2), models=models)
    with running(app) as url, open_page(browser, url) as page:
        yield page


# Records every text the status line shows and every preview the page displays, so a test sees
# each step of the job.
RECORD = """() => {
  window.statusLog = [];
  window.previews = [];
  const status = document.querySelector('#job-status');
  new MutationObserver(() => window.statusLog.push(status.textContent))
    .observe(status, {childList: true, characterData: true, subtree: true});
  const preview = document.querySelector('#preview-image');
  new MutationObserver(() => window.previews.push(preview.getAttribute('src')))
    .observe(preview, {attributes: true, attributeFilter: ['src']});
}"""


def fill_form(page: Any, prompt: str, *, iterations: int, public: bool = False) -> None:
    """A tiny pixel-art job: 40x40 at scale 0.3."""
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("radio", name=re.compile("Pixel art")).check()
    page.locator("#advanced summary").click()
    page.get_by_label("Iterations", exact=True).fill(str(iterations))
    page.get_by_label("Scale", exact=True).fill("0.3")
    page.get_by_label("Seed", exact=True).fill("3")
    if public:
        page.get_by_role("switch", name="Publish to the gallery").check()


def wait_for_text(page: Any, selector: str, pattern: str) -> None:
    """Wait until the element's text matches `pattern` (a JavaScript regular expression)."""
    page.wait_for_function(
        "([s, p]) => new RegExp(p).test(document.querySelector(s).textContent)",
        arg=[selector, pattern],
    )


def natural_width(page: Any, selector: str) -> int:
    return int(page.eval_on_selector(selector, "img => img.complete ? img.naturalWidth : 0"))


def test_make_pixel_art_watch_it_progress_and_find_it_in_the_gallery(page: Any) -> None:
    page.get_by_label("Prompt", exact=True).fill("a lighthouse")
    page.get_by_role("button", name="artstation").click()
    assert page.get_by_label("Prompt", exact=True).input_value() == "a lighthouse, artstation"
    fill_form(page, "a lighthouse, artstation", iterations=30, public=True)
    page.evaluate(RECORD)
    page.get_by_role("button", name="Create art").click()

    page.wait_for_function("document.querySelector('#result-image').naturalWidth > 0")
    page.screenshot(path=str(SHOTS / "done.png"), full_page=True)
    log = page.evaluate("window.statusLog")
    assert any(re.search(r"\d+%", text) for text in log), log  # the progress text changed
    assert log[-1].startswith("Done"), log
    assert any(src and "preview.png" in src for src in page.evaluate("window.previews"))
    assert page.locator("#job-badge").inner_text() == "Done"
    assert page.locator("#result-seed").inner_text() == "3"
    assert "pixel art" in page.locator("#result-settings").inner_text()
    assert page.get_by_role("link", name=re.compile("PNG")).count() == 1
    job_id = re.search(r"[?&]job=(\w+)", page.url)
    assert job_id, page.url

    tile = page.get_by_role("button", name=re.compile("a lighthouse, artstation"))
    tile.wait_for()
    assert natural_width(page, ".tile img") > 0
    assert "pixelated" in (tile.locator("img").get_attribute("class") or "")  # as its card says
    tile.click()
    dialog = page.get_by_role("dialog")
    assert "a lighthouse, artstation" in dialog.inner_text()
    assert "pixelated" in (page.locator("#dialog-image").get_attribute("class") or "")
    page.screenshot(path=str(SHOTS / "gallery-dialog.png"))
    page.get_by_label("Prompt", exact=True).fill("something else")  # behind the dialog
    dialog.get_by_role("button", name="Use these settings").click()
    assert page.get_by_label("Prompt", exact=True).input_value() == "a lighthouse, artstation"

    page.reload()  # the job's URL shows the same job
    page.wait_for_function("document.querySelector('#result-image').naturalWidth > 0")
    assert page.locator("#job-badge").inner_text() == "Done"
    assert page.get_by_label("Prompt", exact=True).input_value() == "a lighthouse, artstation"

    for button, seed in [("Again with this seed", "3"), ("New seed", "")]:
        url = page.url
        page.get_by_role("button", name=button).click()
        page.wait_for_url(lambda new, old=url: new != old)  # a new job, in the address bar
        assert page.get_by_label("Seed", exact=True).input_value() == seed
        # The repeat is as short as the first run: let it finish (cancelling it raced with
        # its end: the Cancel button can vanish between Playwright's checks and its click).
        wait_for_text(page, "#job-badge", "^Done$")
        if seed:
            assert page.locator("#result-seed").inner_text() == seed
        else:
            assert page.locator("#result-seed").inner_text().isdigit()
        page.go_back()  # the finished job again
        wait_for_text(page, "#job-badge", "^Done$")


# Whether the shown result is scaled up without smoothing: the canvas's class, and what the
# browser computes for the picture.
SHOWN_PIXELATED = """() => [
  document.querySelector('#canvas').classList.contains('pixelated'),
  getComputedStyle(document.querySelector('#result-image')).imageRendering,
]"""
SHOWS_RESULT = "src => document.querySelector('#result-image').getAttribute('src') === src"


def make(page: Any, card: str) -> str:
    """Submit the form with the style of the card titled `card`; the finished picture's URL."""
    url = page.url
    page.get_by_role("radio", name=re.compile(f"^{card}")).check()
    page.get_by_role("button", name="Create art").click()
    page.wait_for_url(lambda new: new != url)
    page.wait_for_function("document.querySelector('#result-image').naturalWidth > 0")
    src: str = page.get_attribute("#result-image", "src")
    return src


def test_a_pixel_art_result_is_blocky_as_its_cards_data_says(page: Any) -> None:
    """Pixel art is scaled up without smoothing and an image smoothly because their cards'
    `data-pixelated` (the drawer registry's `pixelated`) says so, not because of their names."""
    fill_form(page, "a tiny robot", iterations=2)
    pixel_art = make(page, "Pixel art")
    assert page.evaluate(SHOWN_PIXELATED) == [True, "pixelated"]
    image = make(page, "Image")
    assert page.evaluate(SHOWN_PIXELATED) == [False, "auto"]

    # Cards that say the opposite: the same two jobs now show the other way round.
    for card, blocky in [("Image", "true"), ("Pixel art", "false")]:
        radio = page.get_by_role("radio", name=re.compile(f"^{card}"))
        radio.evaluate("(input, blocky) => { input.dataset.pixelated = blocky; }", blocky)
    page.go_back()  # the pixel-art job, shown again by the same page
    page.wait_for_function(SHOWS_RESULT, arg=pixel_art)
    assert page.evaluate(SHOWN_PIXELATED) == [False, "auto"]
    page.go_forward()
    page.wait_for_function(SHOWS_RESULT, arg=image)
    assert page.evaluate(SHOWN_PIXELATED) == [True, "pixelated"]


@pytest.mark.parametrize("value", ["0", "999999"])
def test_invalid_iterations_are_shown_beside_the_field(page: Any, value: str) -> None:
    fill_form(page, "a castle", iterations=1)
    page.get_by_label("Iterations", exact=True).fill(value)
    page.get_by_role("button", name="Create art").click()
    error = page.locator("#iterations-error")
    error.wait_for(state="visible")
    assert "iterations" not in page.url
    assert error.inner_text().strip(), "a message that says what is allowed"
    if value == "999999":
        assert "5000" in error.inner_text()
    assert page.get_by_label("Iterations", exact=True).get_attribute("aria-invalid") == "true"
    assert page.locator("#job-badge").is_hidden()  # nothing was submitted
    page.screenshot(path=str(SHOTS / f"invalid-{value}.png"))


def test_cancel_while_running_and_while_queued(page: Any) -> None:
    fill_form(page, "an endless staircase", iterations=3000)
    page.get_by_role("button", name="Create art").click()
    wait_for_text(page, "#job-status", "Making your art")

    second = page.context.new_page()  # same browser: it knows the first job's delete token
    second.goto("/")
    second.wait_for_selector("html[data-ready]")
    fill_form(second, "a queue of people", iterations=3000)
    second.get_by_role("button", name="Create art").click()
    wait_for_text(second, "#job-status", "you are next")
    second.get_by_role("button", name="Cancel").click()
    wait_for_text(second, "#job-badge", "^Cancelled$")
    assert second.get_by_role("button", name="Cancel").is_hidden()
    second.screenshot(path=str(SHOTS / "cancelled-queued.png"))
    second.close()

    page.get_by_role("button", name="Cancel").click()
    wait_for_text(page, "#job-badge", "^Cancelled$")
    assert "Cancelled" in page.locator("#job-status").inner_text()
    assert page.get_by_role("button", name="Cancel").is_hidden()
    page.screenshot(path=str(SHOTS / "cancelled-running.png"))


def test_a_resumed_job_says_where_it_continued(page: Any) -> None:
    """The API says a job continued from a saved state (`resumed_from`): the card says so."""

    def no_stream(route: Any) -> None:
        route.fulfill(status=204)  # the stream closed for good: the page polls the job

    def resumed(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        response = route.fetch()
        body = response.json()
        body["resumed_from"] = 40  # as a worker that continued the job would have recorded
        route.fulfill(response=response, json=body)

    page.route("**/jobs/*/events", no_stream)
    page.route("**/jobs/*", resumed)
    fill_form(page, "a lighthouse in a storm", iterations=3000)
    page.get_by_role("button", name="Create art").click()
    wait_for_text(page, "#progress-text", r"resumed at iteration 40")
    assert re.search(r"iteration \d+ of 3000 · resumed at iteration 40", page.locator(
        "#progress-text").inner_text())  # fmt: skip
    page.get_by_role("button", name="Cancel").click()
    wait_for_text(page, "#job-badge", "^Cancelled$")
    page.unroute_all(behavior="ignoreErrors")  # a poll under way must not outlive the page


def test_an_animation_from_its_section_plays_in_the_picture_s_place(page: Any) -> None:
    fill_form(page, "a lighthouse ^ a storm", iterations=2)
    page.locator("#animation summary").click()
    page.get_by_label("Frames", exact=True).fill("3")
    page.get_by_label("Iterations per frame").fill("1")
    page.get_by_role("button", name="Use 0:(1.0), 30:(1.04), 60:(1.0) as the zoom").click()
    assert page.get_by_label("Zoom", exact=True).input_value() == "0:(1.0), 30:(1.04), 60:(1.0)"
    with page.expect_request("**/jobs") as sent:
        page.get_by_role("button", name="Create art").click()
    body = sent.value.post_data or ""
    for field, value in [("frames", "3"), ("frame_iterations", "1"),
                         ("zoom", "0:(1.0), 30:(1.04), 60:(1.0)")]:  # fmt: skip
        assert re.search(rf'name="{field}"\r\n\r\n{re.escape(value)}\r\n', body), field
    wait_for_text(page, "#job-badge", "^Done$")
    video = page.locator("#canvas #result-video")  # the video first, where the picture was
    video.wait_for(state="visible")
    assert page.locator("#result-image").is_hidden()
    assert (video.get_attribute("src") or "").endswith(".mp4")
    page.screenshot(path=str(SHOTS / "animation.png"))


def test_tile_and_symmetry_from_the_advanced_section(page: Any) -> None:
    """The Advanced section is collapsed at first; its creative controls are sent only when set
    (a control at its default is left out) and come back with "use these settings"."""
    assert page.locator("#advanced").get_attribute("open") is None
    assert page.get_by_label("Symmetry", exact=True).is_hidden()
    fill_form(page, "a tiled floor", iterations=2)
    page.get_by_label("Symmetry", exact=True).select_option("horizontal")
    page.get_by_role("switch", name="Seamless tile").check()
    page.get_by_label("Symmetry strength").fill("3")
    page.get_by_label("Start from", exact=True).select_option("gradient")
    with page.expect_request("**/jobs") as sent:
        page.get_by_role("button", name="Create art").click()
    body = sent.value.post_data or ""
    for field, value in [("symmetry", "horizontal"), ("tile", "true"), ("symmetry_weight", "3"),
                         ("init_noise", "gradient")]:  # fmt: skip
        assert re.search(rf'name="{field}"\r\n\r\n{re.escape(value)}\r\n', body), field
    for field in ("optimiser", "augments", "cut_power", "learning_rate"):  # left at defaults
        assert f'name="{field}"' not in body, field
    wait_for_text(page, "#job-badge", "^Done$")
    page.screenshot(path=str(SHOTS / "creative-controls.png"))
    # The job's settings go back into the form: a fresh page, then the job's own link.
    assert page.evaluate("() => new URL(location.href).searchParams.get('job')")
    page.reload()
    page.wait_for_selector("html[data-ready]")
    page.wait_for_function("() => document.querySelector('#symmetry').value === 'horizontal'")
    assert page.get_by_role("switch", name="Seamless tile").is_checked()
    assert page.get_by_label("Start from", exact=True).input_value() == "gradient"
    assert page.get_by_label("Optimiser").input_value() == "adam"  # the default, not sent
    assert page.locator("#advanced").get_attribute("open") is not None


def test_a_card_the_server_does_not_list_is_disabled(browser: Any, base_url: str) -> None:
    """/info lists every style but the first (the default): its card is disabled and the next
    one is chosen instead."""
    listed: list[str] = []

    def all_but_the_first(route: Any) -> None:
        info = route.fetch().json()
        listed.extend(info["styles"][1:])
        route.fulfill(json={**info, "styles": listed})

    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/info", all_but_the_first)
    page = context.new_page()
    page.goto("/")
    page.wait_for_function("document.querySelector('input[name=style]').disabled")
    cards = page.eval_on_selector_all(
        "input[name=style]",
        "inputs => inputs.map(i => [i.value, i.disabled, i.checked, i.closest('.choice').title])",
    )
    context.close()
    first, *others = cards
    assert first[1:] == [True, False, "Not installed on this server"]
    assert [c[0] for c in others] == listed and len(listed) >= 1
    assert [c[1:] for c in others] == [[False, i == 0, ""] for i in range(len(others))]


def test_keyboard_adds_keywords_and_picks_choices(page: Any) -> None:
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a fox")
    prompt.focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the first chip
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the second
    assert prompt.input_value() == "a fox, artstation, unreal engine"
    page.keyboard.press("Space")  # pressed again: taken out
    assert prompt.input_value() == "a fox, artstation"
    page.get_by_role("radio", name=re.compile("Square")).focus()
    page.keyboard.press("ArrowRight")
    assert page.get_by_role("radio", name=re.compile("Wide")).is_checked()


@pytest.mark.parametrize(("status", "words"), [(503, "queue is full"), (429, "too quickly")])
def test_busy_answers_say_when_to_retry(page: Any, status: int, words: str) -> None:
    def busy(route: Any) -> None:
        body = '{"detail": "busy"}'
        headers = {"Retry-After": "42", "Content-Type": "application/json"}
        route.fulfill(status=status, body=body, headers=headers)

    page.route("**/jobs", busy)
    fill_form(page, "a castle", iterations=1)
    page.get_by_role("button", name="Create art").click()
    alert = page.locator("#form-alert")
    alert.wait_for(state="visible")
    assert words in alert.inner_text()
    assert re.search(r"try again in 4[12] s \(at \d\d:\d\d", alert.inner_text()), alert.inner_text()


# An 11 MB file made in the page (faster than sending one through the driver).
HUGE_FILE = """input => {
  const files = new DataTransfer();
  files.items.add(new File([new Uint8Array(11 * 1024 * 1024)], 'huge.png', {type: 'image/png'}));
  input.files = files.files;
  input.dispatchEvent(new Event('change'));
}"""


def test_start_image_shows_a_preview_and_the_size_limit(page: Any) -> None:
    png = png_bytes(size=(16, 12), colour=(200, 40, 90))
    upload = page.locator("#init_image")
    assert "10 MB" in page.locator("#init_image-hint").inner_text()
    upload.set_input_files({"name": "start.png", "mimeType": "image/png", "buffer": png})
    page.wait_for_function("document.querySelector('#init-preview').naturalWidth === 16")
    assert "start.png" in page.locator("#init-text").inner_text()

    upload.evaluate(HUGE_FILE)
    error = page.locator("#init_image-error")
    error.wait_for(state="visible")
    assert "limit is 10 MB" in error.inner_text()
    page.get_by_role("button", name="Remove").click()
    assert page.locator("#init-preview").is_hidden()
    assert error.is_hidden()


def test_phone_layout_has_no_horizontal_scroll(browser: Any, base_url: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=base_url)
    page = context.new_page()
    page.goto("/")
    page.wait_for_selector("html[data-ready]")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.screenshot(path=str(SHOTS / "phone.png"), full_page=True)
    context.close()
    assert overflow <= 0


def test_the_video_shows_the_final_picture_until_played(page: Any) -> None:
    fill_form(page, "a red lighthouse", iterations=6)
    page.get_by_role("switch", name="Make a video of the process").check()
    page.get_by_role("button", name="Create art").click()
    page.wait_for_function("document.querySelector('#result-image').naturalWidth > 0")
    page.screenshot(path=str(SHOTS / "video.png"), full_page=True)
    video = page.locator("#result-video")
    video.wait_for()
    image_src = page.get_attribute("#result-image", "src")
    assert image_src and video.get_attribute("poster") == image_src
    assert video.get_attribute("src")


def _loopback_only(route: Any) -> None:
    """Abort every request that would leave the machine (a CDN), as offline."""
    host = re.match(r"^[a-z]+://([^/:]+)", route.request.url)
    if host and host.group(1) in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/docs", ".opblock-summary-path[data-path='/generate']"), ("/redoc", "text=/jobs")],
)
def test_api_docs_work_offline(browser: Any, base_url: str, path: str, operation: str) -> None:
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", _loopback_only)
    page = context.new_page()
    outside: list[str] = []
    page.on("requestfailed", lambda r: outside.append(r.url))  # ReDoc's CDN logo included
    page.goto(path)
    page.locator(operation).first.wait_for()
    page.screenshot(path=str(SHOTS / f"docs{path.replace('/', '-')}.png"))
    context.close()
    assert outside == [], f"{path} tried to load from outside: {outside}"


# True once the grid of a finished batch shows `n` pictures, every one loaded.
PICTURES_LOADED = """n => {
  const images = [...document.querySelectorAll('#variations-grid img')];
  return images.length === n && images.every(img => img.complete && img.naturalWidth > 0);
}"""


def job_json(page: Any) -> dict[str, Any]:
    """GET /jobs/{id} of the job in the page's address bar."""
    job_id = re.search(r"[?&]job=(\w+)", page.url)
    assert job_id, page.url
    return page.evaluate("id => fetch('/jobs/' + id).then(r => r.json())", job_id.group(1))


def submit_and_read_form(page: Any, button: Any) -> dict[str, str]:
    """Click `button`, and return the text fields of the POST /jobs it sends."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/jobs")) as sent:
        button.click()
    body = sent.value.post_data_buffer.decode("utf-8", "replace")
    return dict(re.findall(r'name="(\w+)"\r\n\r\n([^\r]*)\r\n', body))


def picture_pixels(page: Any, url: str) -> bytes:
    import io

    from PIL import Image

    png = page.context.request.get(url).body()
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def count_radio(page: Any, n: int) -> Any:
    """The Variations option for `n` pictures."""
    return page.get_by_role("radio", name=f"{n} picture" if n == 1 else f"{n} pictures")


def check_batch_of_two(page: Any) -> dict[str, Any]:
    """The finished batch (seeds 3 and 4) as the page shows it; returns its job JSON."""
    pictures = page.locator("#variations-grid > li")
    assert [c.inner_text() for c in pictures.locator("figcaption").all()] == ["Seed 3", "Seed 4"]
    assert page.locator("#canvas").is_hidden()  # the pictures replace the contact sheet
    classes = [img.get_attribute("class") or "" for img in pictures.locator("img").all()]
    assert classes == ["pixelated", "pixelated"]  # pixel art: its card says blocky
    job = job_json(page)
    assert job["settings"]["variations"] == 2 and job["settings"]["seed"] == 3
    assert [(v["index"], v["seed"]) for v in job["links"]["variations"]] == [(1, 3), (2, 4)]
    for picture, link in zip(pictures.all(), job["links"]["variations"], strict=True):
        png = picture.get_by_role("link", name=re.compile("as PNG$"))
        assert png.get_attribute("href") == link["image"]
        assert f"seed {link['seed']}" in picture.locator("img").get_attribute("alt")
    sheet = page.locator("#downloads").get_by_role("link", name="All 2 (contact sheet)")
    assert sheet.get_attribute("href") == job["links"]["image"]
    assert "2 variations (seeds 3 to 4)" in page.locator("#result-image").get_attribute("alt")
    assert re.match(r"Done.*: 2 pictures\.$", page.locator("#job-status").inner_text())
    assert page.locator("#result-seed").inner_text() == "3–4"
    assert "2 variations" in page.locator("#result-settings").inner_text()
    return job


def check_gallery_badge_and_settings(page: Any, prompt: str) -> None:
    """The batch's tile says ×2, and "Use these settings" chooses 2 pictures again."""
    tile = page.get_by_role("button", name=re.compile(f"{prompt}”, 2 variations"))
    tile.wait_for()
    assert tile.locator(".tile-count").inner_text() == "×2"
    count_radio(page, 1).check()
    tile.click()
    dialog = page.get_by_role("dialog")
    assert dialog.get_by_role("link", name=re.compile("PNG, seed 4")).count() == 1
    dialog.get_by_role("button", name="Use these settings").click()
    assert count_radio(page, 2).is_checked()


def test_two_variations_each_with_its_seed_files_and_its_own_again(page: Any) -> None:
    fill_form(page, "two red lighthouses", iterations=4, public=True)
    count_radio(page, 2).check()
    sent = submit_and_read_form(page, page.get_by_role("button", name="Create art"))
    assert sent["variations"] == "2" and sent["seed"] == "3"
    page.wait_for_function(PICTURES_LOADED, arg=2)
    page.screenshot(path=str(SHOTS / "variations.png"), full_page=True)
    check_batch_of_two(page)
    page.set_viewport_size({"width": 375, "height": 740})  # a phone: the grid fits
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    page.screenshot(path=str(SHOTS / "variations-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    check_gallery_badge_and_settings(page, "two red lighthouses")

    # "Again with these seeds" makes the whole batch again.
    url = page.url
    again = page.locator("#result").get_by_role("button", name="Again with these seeds")
    sent = submit_and_read_form(page, again)
    assert sent["variations"] == "2" and sent["seed"] == "3"
    page.wait_for_url(lambda new: new != url)
    page.wait_for_function(PICTURES_LOADED, arg=2)
    batch = check_batch_of_two(page)

    # One picture's "Again with this seed" makes that picture alone: same seed, one picture.
    url = page.url
    second = page.locator("#variations-grid > li").nth(1)
    button = second.get_by_role("button", name="Again with this seed")
    assert button.get_attribute("aria-describedby")  # its caption, "Seed 4", says which one
    sent = submit_and_read_form(page, button)
    assert sent["seed"] == "4" and "variations" not in sent
    page.wait_for_url(lambda new: new != url)
    assert page.get_by_label("Seed", exact=True).input_value() == "4"
    assert count_radio(page, 1).is_checked()
    page.wait_for_function("document.querySelector('#result-image').naturalWidth > 0")
    solo = job_json(page)
    assert solo["settings"]["seed"] == 4 and solo["settings"]["variations"] == 1
    assert solo["links"]["variations"] == []
    assert page.locator("#variations").is_hidden() and page.locator("#canvas").is_visible()
    assert page.locator("#result-seed").inner_text() == "4"
    assert page.locator("#result").get_by_role("button", name="Again with this seed").count() == 1
    page.screenshot(path=str(SHOTS / "variation-alone.png"), full_page=True)
    # On the CPU each picture of a batch is its solo run, pixel for pixel.
    batch_picture = picture_pixels(page, batch["links"]["variations"][1]["image"])
    assert picture_pixels(page, solo["links"]["image"]) == batch_picture


def test_counts_above_the_servers_most_are_disabled(limited_page: Any) -> None:
    page = limited_page
    assert [count_radio(page, n).is_enabled() for n in range(1, 5)] == [True, True, False, False]
    for n in (3, 4):
        label = page.locator("label.seg", has=count_radio(page, n))
        assert label.get_attribute("title") == "This server allows at most 2 variations."
    assert "at most 2 variations" in page.locator("#variations-hint").inner_text()
    field = page.locator('[data-field="variations"]')
    field.screenshot(path=str(SHOTS / "variations-limited.png"))

    # A page that still offers 4 (made before the limit changed) gets the server's answer.
    count_radio(page, 4).evaluate("input => { input.disabled = false; input.checked = true; }")
    fill_form(page, "four towers", iterations=2)
    page.get_by_role("button", name="Create art").click()
    error = page.locator("#variations-error")
    error.wait_for(state="visible")
    assert re.search(r"\b2\b", error.inner_text()), "the message says what is allowed"
    field.screenshot(path=str(SHOTS / "variations-refused.png"))
    assert page.locator("#job-badge").is_hidden()  # nothing was submitted


def test_the_estimate_shows_before_submitting(browser: Any, tmp_path: Path, models: Any) -> None:
    """Issue 30: the page says how long the request would take on this server, and when it is
    over the server's ceiling (T2A_MAX_COST), which fields to lower."""
    from api.app import create_app

    app = create_app(tiny_service_config(tmp_path, max_cost=0.5), models=models)
    with running(app) as url, open_page(browser, url) as page:
        fill_form(page, "a castle", iterations=2)
        wait_for_text(page, "#estimate", "^This will take about \\d+ s on this server")
        page.get_by_label("Iterations", exact=True).fill("5000")
        wait_for_text(page, "#estimate", "^Too large for this server.*Lower ")
        assert "iterations" in page.locator("#estimate").inner_text()


# What a server without its weights answers (one unbreakable URL and path, as offline).
LONG_ERROR = (
    "CLIP ViT-B/32 weights missing: could not download ViT-B-32.pt; get it from https://"
    "openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c452"
    "6f58eba950af/ViT-B-32.pt and put it at /home/someone/.cache/text2art/clip/ViT-B-32.pt"
)


class _NoWeights(ModelCache):
    """A model cache on a server whose weights are missing: every run fails with LONG_ERROR."""

    def clip(self, name: str, device: Any) -> Any:
        raise WeightsError(LONG_ERROR)


# Where the page sticks out of the window: the document's extra width, and each element of the
# job card whose right edge is past the window's.
OVERFLOW = """() => {
  const width = window.innerWidth;
  const out = [...document.querySelectorAll('#job, #job *')]
    .filter(el => el.getClientRects().length && el.getBoundingClientRect().right > width + 0.5)
    .map(el => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`);
  return {extra: document.documentElement.scrollWidth - width, out};
}"""


@pytest.mark.parametrize("width", [1280, 390])
def test_a_failed_job_with_a_long_error_stays_inside_the_page(
    browser: Any, tmp_path: Path, width: int
) -> None:
    from api.app import create_app

    app = create_app(tiny_service_config(tmp_path), models=_NoWeights())
    with running(app) as url, open_page(browser, url, width) as page:
        fill_form(page, "a red lighthouse", iterations=4)
        page.get_by_role("button", name="Create art").click()
        wait_for_text(page, "#job-badge", "^Failed$")
        wait_for_text(page, "#job-error", "ViT-B-32.pt and put it at")
        page.screenshot(path=str(SHOTS / f"failed-{width}.png"), full_page=True)
        overflow = page.evaluate(OVERFLOW)
        boxes = {sel: page.locator(sel).bounding_box() for sel in ("#job-badge", "#canvas")}
        error = page.locator("#job-error").bounding_box()
        card = page.locator("#job").bounding_box()
    assert overflow == {"extra": 0, "out": []}
    for box in boxes.values():
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    assert error is not None and card is not None
    assert error["x"] + error["width"] <= card["x"] + card["width"]


def hints_shown(page: Any) -> dict[str, Any]:
    """What the form suggests: the prompt's placeholder, the chips, the empty fields' defaults."""
    return {
        "example": page.get_attribute("#prompts", "placeholder"),
        "chips": page.eval_on_selector_all(".chip", "cs => cs.map(c => c.dataset.keyword)"),
        "iterations": page.get_attribute("#iterations", "placeholder"),
        "scale": page.get_attribute("#scale", "placeholder"),
        "size": page.text_content("#size-hint"),
    }


def test_hints_come_from_the_models_the_server_runs(
    browser: Any, tmp_path: Path, models: Any
) -> None:
    """On the bundled shapes models: their world's example, words, 100 iterations, 64 px."""
    from api.app import create_app
    from engine.catalog import SHAPES_WORLD

    app = create_app(jobs_config(tmp_path, clip_models=["shapes"]), models=models)
    with running(app) as url, open_page(browser, url) as page:
        page.wait_for_function(
            "document.querySelector('#iterations').placeholder.startsWith('100')"
        )
        square = hints_shown(page)
        page.get_by_role("radio", name=re.compile("Wide")).check()
        wide = page.text_content("#size-hint")
        page.get_by_label("Prompt", exact=True).fill("a red circle")
        page.locator(".chip", has_text="on a blue background").click()
        prompt = page.get_by_label("Prompt", exact=True).input_value()
    assert square == {
        "example": "a yellow star on a purple background",
        "chips": list(SHAPES_WORLD.hints.keywords),
        "iterations": "100 (default)",
        "scale": "1 (default)",
        "size": " (64 × 64 at 1)",
    }
    assert wide == " (64 × 36 at 1)"
    assert prompt == "a red circle, on a blue background"


def test_hints_on_the_real_models_are_the_presets(page: Any) -> None:
    page.wait_for_function("document.querySelector('#iterations').placeholder.startsWith('200')")
    assert hints_shown(page) == {
        "example": "an underwater city with glowing jellyfish",
        "chips": ["artstation", "unreal engine", "deviantart", "#pixelart", "pencil sketch",
                  "low poly", "Thomas Kinkade", "James Gurney"],
        "iterations": "200 (default)",
        "scale": "2.5 (default)",
        "size": " (150 × 150 at 1)",
    }  # fmt: skip


def test_a_server_without_weights_says_so_when_the_page_opens(browser: Any, tmp_path: Path) -> None:
    from api.app import create_app

    app = create_app(tiny_service_config(tmp_path, preload=True), models=_NoWeights())
    with running(app) as url, open_page(browser, url) as page:
        wait_for_text(page, "#form-alert", "cannot make pictures")
        alert = page.text_content("#form-alert")
    assert alert is not None and alert.startswith(
        "This server cannot make pictures right now: warm-up failed: model weights are not "
        "available: CLIP ViT-B/32 weights missing"
    )
    assert "text2art serve --clip-model shapes" in alert


def test_a_job_behind_a_generate_shows_it_waits_for_the_gpu(
    browser: Any, tmp_path: Path, models: Any
) -> None:
    """The in-process worker took the job while a POST /generate holds the GPU."""
    from api.app import create_app

    app = create_app(tiny_service_config(tmp_path), models=models)
    with running(app) as url, open_page(browser, url) as page:
        with app.state.gpu.slot():  # what a POST /generate holds while it runs
            fill_form(page, "a red lighthouse", iterations=4)
            page.get_by_role("button", name="Create art").click()
            wait_for_text(page, "#job-status", "^Waiting for the GPU")
            shown = {
                "status": page.text_content("#job-status"),
                "badge": page.text_content("#job-badge"),
                "detail hidden": page.locator("#progress-text").is_hidden(),
            }
        wait_for_text(page, "#job-badge", "^Done$")
    assert shown == {
        "status": "Waiting for the GPU: 1 picture is being made before yours.",
        "badge": "Waiting",
        "detail hidden": True,  # not "iteration 0 of 4"
    }
