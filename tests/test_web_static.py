"""The web page without a browser: it is served, its assets load, its controls are labelled and
match the API's fields and the engine's choices (its style cards are the drawer registry)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import jobs_config, serving

from api.forms import FORM_FIELDS
from api.routes.web import STATIC_DIR, mount_web
from engine import ModelCache, Settings, choices
from engine.drawers import DEFAULT_STYLE, DRAWERS, Drawer, drawer_class, list_drawers
from engine.drawers.pixel import PixelDrawer
from engine.settings import ASPECTS, MAX_VARIATIONS, QUALITIES

# The fields of POST /jobs the page sends (the /generate form plus email and public).
JOB_FIELDS = {
    "prompts",
    "style",
    "quality",
    "aspect",
    "scale",
    "seed",
    "iterations",
    "make_video",
    "init_image",
    "email",
    "public",
    "variations",
}
KEYWORDS = [
    "artstation",
    "unreal engine",
    "deviantart",
    "#pixelart",
    "pencil sketch",
    "low poly",
    "Thomas Kinkade",
    "James Gurney",
]
CONTROLS = {"input", "select", "textarea"}
VOID = {"input", "img", "br", "hr", "meta", "link", "source", "col", "area", "base", "wbr"}


class Page(HTMLParser):
    """Every element with its attributes, its text, and the labels that wrap it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        labels = [e for e in self._open if e["tag"] == "label"]
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "in_label": bool(labels)}
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data

    def find(self, tag: str | None = None, **attrs: str) -> list[dict]:
        """Elements with this tag (any when None) whose attributes include `attrs`."""
        return [
            e
            for e in self.elements
            if (tag is None or e["tag"] == tag)
            and all(e["attrs"].get(k.rstrip("_")) == v for k, v in attrs.items())
        ]


def web_client() -> TestClient:
    """A client of an app that serves only the page."""
    app = FastAPI()
    mount_web(app)
    return TestClient(app)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return web_client()


def parse(text: str) -> Page:
    parser = Page()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def page(client: TestClient) -> Page:
    """The page as `/` serves it: index.html with its style cards filled in."""
    return parse(client.get("/").text)


def test_root_serves_the_page_uncached(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert '<form id="create-form"' in response.text
    assert "<title>text2art" in response.text


def local_assets(page: Page) -> set[str]:
    """Every /static URL the page links to (stylesheet, scripts, icons, images)."""
    urls = {e["attrs"].get("href") for e in page.find("link")}
    urls |= {e["attrs"].get("src") for e in page.elements if e["tag"] in {"script", "img"}}
    return {u for u in urls if u and u.startswith("/static/")}


def test_every_asset_is_served_by_the_app_itself(client: TestClient, page: Page) -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html), "no CDN or external asset"
    types = {".css": "text/css", ".js": "javascript", ".svg": "image/svg+xml"}
    assets = local_assets(page)
    assert {"/static/style.css", "/static/app.js", "/static/favicon.svg"} <= assets
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200, url
        assert types[Path(url).suffix] in response.headers["content-type"], url
        assert response.headers["cache-control"] == "no-cache"


def test_every_module_import_resolves(client: TestClient) -> None:
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert scripts
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        assert "http://" not in source and "https://" not in source, script.name
        for target in re.findall(r"""from\s+["'](\./[^"']+)["']""", source):
            url = "/static/" + target.removeprefix("./")
            assert client.get(url).status_code == 200, f"{script.name} imports {target}"


def test_missing_static_file_is_404(client: TestClient) -> None:
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../routes/web.py").status_code == 404


def accessible_name(page: Page, element: dict) -> bool:
    attrs = element["attrs"]
    if attrs.get("aria-label") or element["in_label"]:
        return True
    if attrs.get("aria-labelledby"):
        return all(page.find(id=i) for i in attrs["aria-labelledby"].split())
    return bool(attrs.get("id") and page.find("label", for_=attrs["id"]))


def test_every_control_is_labelled(page: Page) -> None:
    controls = [e for e in page.elements if e["tag"] in CONTROLS]
    assert len(controls) >= len(JOB_FIELDS)
    unlabelled = [e["attrs"] for e in controls if not accessible_name(page, e)]
    assert unlabelled == []
    buttons = page.find("button")
    assert all(b["text"].strip() or b["attrs"].get("aria-label") for b in buttons)


def test_every_image_has_alt_text(page: Page) -> None:
    images = page.find("img")
    assert images
    assert all("alt" in img["attrs"] for img in images)


def test_form_sends_every_job_field_and_leaves_validation_to_the_server(page: Page) -> None:
    form = page.find("form", id="create-form")[0]
    assert "novalidate" in form["attrs"], "422 messages beside fields need the server to check"
    names = {e["attrs"].get("name") for e in page.elements if e["tag"] in CONTROLS}
    assert names >= JOB_FIELDS
    for field in JOB_FIELDS:  # a slot beside each field for its 422 message
        assert page.find("p", id=f"{field}-error"), field


def test_choices_match_the_engine(page: Page) -> None:
    styles = [e["attrs"]["value"] for e in page.find("input", name="style")]
    aspects = [e["attrs"]["value"] for e in page.find("input", name="aspect")]
    qualities = select_options("quality")
    assert sorted(styles) == sorted(list_drawers())
    assert sorted(aspects) == sorted(ASPECTS)
    assert qualities == list(QUALITIES)


# -- the style cards: the server renders one per registered drawer -----------------------------
CARD = re.compile(
    r'<label class="choice">\s*<input (?P<input>[^>]*)>\s*<span class="choice-body">\s*'
    r'<svg class="choice-icon" viewBox="0 0 24 24" aria-hidden="true">(?P<icon>.*?)</svg>\s*'
    r'<span class="choice-title">(?P<title>[^<]*)</span>\s*'
    r'<span class="choice-sub">(?P<summary>[^<]*)</span>\s*</span>\s*</label>',
    re.DOTALL,
)


def style_cards(text: str) -> list[dict[str, Any]]:
    """The style cards of a served page: the input's attributes, the icon's markup, and the
    title and summary as a reader sees them."""
    return [
        {
            "input": parse(f"<input {card['input']}>").elements[0]["attrs"],
            "icon": card["icon"],
            "title": html.unescape(card["title"]),
            "summary": html.unescape(card["summary"]),
        }
        for card in CARD.finditer(text)
    ]


def expected_card(name: str) -> dict[str, Any]:
    """The card of a style as its drawer declares it; its title is its name, capitalised."""
    drawer = drawer_class(name)
    attrs: dict[str, str | None] = {"type": "radio", "name": "style", "value": name}
    attrs["data-pixelated"] = "true" if drawer.pixelated else "false"
    if name == DEFAULT_STYLE:
        attrs["checked"] = None
    return {
        "input": attrs,
        "icon": drawer.icon,
        "title": name.capitalize(),
        "summary": drawer.summary,
    }


def test_one_style_card_per_registered_drawer_in_registry_order(client: TestClient) -> None:
    text = client.get("/").text
    assert style_cards(text) == [expected_card(name) for name in list_drawers()]
    assert text.count('name="style"') == len(list_drawers()), "no card but the registry's"
    assert "<!-- style cards" not in text


class _Mosaic(PixelDrawer):
    """A blocky style that exists only in this test; its summary looks like markup."""

    name: ClassVar[str] = "mosaic"
    aliases: ClassVar[tuple[str, ...]] = ("tiles",)
    summary: ClassVar[str] = "tiles & <b>grout</b>"


class _Sketch(Drawer):
    """A smooth style that exists only in this test and declares no icon; `&` in its name."""

    name: ClassVar[str] = "sketch & wash"
    summary: ClassVar[str] = 'pencil "lines"'
    default_lr: ClassVar[float] = 0.1


@pytest.fixture
def more_styles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The registry with _Mosaic and _Sketch registered after the real styles."""
    for drawer in (_Mosaic, _Sketch):
        monkeypatch.setitem(DRAWERS, drawer.name, drawer)
    return list_drawers()


def test_a_registered_drawer_gets_its_card_with_its_text_escaped(more_styles: list[str]) -> None:
    text = web_client().get("/").text
    cards = style_cards(text)
    assert cards == [expected_card(name) for name in more_styles]
    mosaic, sketch = cards[-2:]
    assert mosaic["input"]["value"] == "mosaic" and mosaic["input"]["data-pixelated"] == "true"
    assert sketch["input"]["data-pixelated"] == "false"
    assert sketch["icon"] == Drawer.icon != mosaic["icon"]  # the base class's generic icon
    # Texts are text, never markup.
    assert "tiles &amp; &lt;b&gt;grout&lt;/b&gt;" in text and "<b>" not in text
    assert 'value="sketch &amp; wash"' in text and ">Sketch &amp; wash<" in text
    assert "pencil &quot;lines&quot;" in text


def test_info_describes_each_style_as_the_page_shows_it(
    tmp_path: Path, models: ModelCache, more_styles: list[str]
) -> None:
    with serving(jobs_config(tmp_path), models) as service:
        info = service.get("/info").json()
        cards = style_cards(service.get("/").text)
    assert info["styles"] == more_styles  # the names, as clients read them
    expected = []
    for name in more_styles:
        drawer = drawer_class(name)
        expected.append(
            {
                "name": name,
                "title": name.capitalize(),
                "summary": drawer.summary,
                "aliases": list(drawer.aliases),
                "pixelated": drawer.pixelated,
                "default": name == DEFAULT_STYLE,
            }
        )
    assert info["style_details"] == expected
    shown = [
        (c["input"]["value"], c["title"], c["summary"], "checked" in c["input"]) for c in cards
    ]
    assert shown == [(s["name"], s["title"], s["summary"], s["default"]) for s in expected]


def test_the_scripts_never_decide_by_a_style_name() -> None:
    """Pixelation comes from the cards' data-pixelated (format.js's isPixelated), so no script
    compares a style with a string."""
    compares = re.compile(
        r"""\bstyle(\.value)?\s*[!=]==?\s*["'`]|["'`]\s*[!=]==?\s*[\w.?]*\bstyle\b"""
    )
    for script in sorted(STATIC_DIR.glob("*.js")):
        source = script.read_text(encoding="utf-8")
        assert not compares.search(source), f"{script.name} compares a style with a string"
    helper = (STATIC_DIR / "format.js").read_text(encoding="utf-8")
    assert 'input.dataset.pixelated === "true"' in helper


def test_keyword_chips_are_the_articles_modifiers(page: Page) -> None:
    chips = [e for e in page.find("button") if "chip" in e["attrs"].get("class", "").split()]
    assert [c["attrs"]["data-keyword"] for c in chips] == KEYWORDS
    assert all(c["attrs"].get("type") == "button" for c in chips)  # never submit the form


def select_options(name: str) -> list[str]:
    """The option values of the page's select `name`, in order."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    start = html.index(f'<select id="{name}"')
    return re.findall(r'<option value="([^"]*)"', html[start : html.index("</select>", start)])


# The creative controls (issue 29) the Advanced fold has, beside seed, iterations and scale.
CREATIVE = ("symmetry", "symmetry_weight", "tile", "init_noise", "optimiser", "learning_rate",
            "augments", "cut_power", "save_every", "stroke_width", "pixel_shape")  # fmt: skip


def test_advanced_fold_holds_seed_iterations_scale_and_every_creative_control(
    page: Page,
) -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    fold = html[html.index('<details class="advanced"') : html.index("</details>")]
    assert '<details class="advanced" id="advanced">' in html, "collapsed by default"
    for name in ("seed", "iterations", "scale", *CREATIVE):
        assert f'name="{name}"' in fold, name
        assert page.find("p", id=f"{name}-error"), name
    assert set(CREATIVE) <= set(FORM_FIELDS), "each is a field of the form"
    for name in ("symmetry", "init_noise", "optimiser", "pixel_shape"):  # choices and default
        assert sorted(select_options(name)) == sorted(choices(name) or ()), name
        default = Settings.model_fields[name].default
        assert f'<option value="{default}" selected>' in fold, name
    app = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    defaults = re.search(r"const CONTROL_DEFAULTS = \{(.*?)\};", app, re.S)
    assert defaults is not None
    for name in set(CREATIVE) - {"tile"}:  # the script knows each one's default
        assert re.search(rf"\b{name}: ", defaults.group(1)), name
    augments = ",".join(Settings.model_fields["augments"].get_default(call_default_factory=True))
    assert f'augments: "{augments}"' in defaults.group(1)


def fieldset(html: str, field: str) -> str:
    """The markup of the fieldset of one form field."""
    start = html.index(f'<fieldset class="field" data-field="{field}"')
    return html[start : html.index("</fieldset>", start)]


def test_variations_offer_one_to_the_engines_most_one_by_default(page: Page) -> None:
    radios = page.find("input", name="variations")
    counts = range(1, MAX_VARIATIONS + 1)
    assert [r["attrs"]["value"] for r in radios] == [str(n) for n in counts]
    assert ["checked" in r["attrs"] for r in radios] == [n == 1 for n in counts]
    assert all(r["attrs"]["type"] == "radio" and r["in_label"] for r in radios)
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    group = fieldset(html, "variations")
    assert "<legend>Variations</legend>" in group
    assert group.count('name="variations"') == MAX_VARIATIONS
    assert 'aria-describedby="variations-hint variations-error"' in group
    assert "consecutive seeds" in page.find("p", id="variations-hint")[0]["text"]
    assert page.find("span", id="variations-limit"), "where the server's most is said"


def test_a_finished_batch_has_a_grid_between_the_canvas_and_the_status(page: Page) -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    canvas, grid = html.index('id="canvas"'), html.index('<ul class="variations-grid"')
    assert canvas < grid < html.index('id="status-block"')
    section = page.find("section", id="variations")[0]
    assert "hidden" in section["attrs"], "shown only for a job with several pictures"
    assert page.find(id=section["attrs"]["aria-labelledby"])
    assert page.find("dt", id="result-seed-label"), "'Seed' becomes 'Seeds' for a batch"


def test_the_script_sends_variations_only_for_a_batch_and_reads_the_servers_most() -> None:
    app = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    # An old server (no variations field) keeps working: the field is left out for one picture.
    assert re.search(r'if \(variations > 1\) data\.set\("variations"', app)
    assert "limitVariations(info.limits)" in app and "limits.max_variations" in app
    assert "setVariations(s.variations)" in app  # fillForm: "use these settings", reloads
    assert "job.links?.variations" in app  # the pictures of a finished batch
    gallery = (STATIC_DIR / "gallery.js").read_text(encoding="utf-8")
    assert "variationCount(settings.variations)" in gallery  # an item's list -> its count
    assert "tile-count" in gallery and ".tile-count" in (STATIC_DIR / "style.css").read_text()


def test_the_service_serves_the_page_and_accepts_every_field_it_sends(tmp_path: Path) -> None:
    from api.app import create_app
    from api.config import ServiceConfig

    config = ServiceConfig(output_dir=tmp_path, preload=False, run_worker_in_process=False)
    client = TestClient(create_app(config))  # no lifespan: nothing runs, only routes are read
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 200, "create_app must call mount_web (no /docs redirect)"
    assert '<form id="create-form"' in response.text
    assert client.get("/static/app.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/" not in schema["paths"]
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]
    ref = body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][ref]["properties"]) >= JOB_FIELDS
