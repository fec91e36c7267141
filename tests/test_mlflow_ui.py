"""The MLflow UI of two real translator runs, rendered by headless Chromium: the compare view lines them up.

A module fixture trains a TANQ and a CycleGAN run (``tanq train`` on the tiny
phantom at 32 x 32, 2 epochs of narrow networks) into a real ``mlflow server``
on a SQLite store, then drives Debian's ``chromium --headless`` over the
DevTools protocol (the compare page's metric table is a virtualised grid that
renders only the rows in view, so ``--dump-dom`` alone cannot read it):

- ``#/compare-runs?runs=[...]&experiments=[...]``: the parameter table and the
  metric table (scrolled through);
- the experiment page in chart mode (``#/experiments/<id>/runs?compareRunsMode=CHART``)
  with both runs shown: the image cards, one per MLflow image key (the compare
  page's artifact section lists only files at the top of both runs' artifacts,
  and a translator run has only the folders ``images/`` and ``model/``);
- a translator run's page with its ``translation`` picture open.

It also takes the screenshots in the README; ``TANQ_UPDATE_DOCS_SCREENSHOTS=1``
copies them to ``docs/``::

    TANQ_UPDATE_DOCS_SCREENSHOTS=1 .venv/bin/pytest -m slow tests/test_mlflow_ui.py

The selectors follow MLflow 3.17's UI.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from mlflow import MlflowClient

from conftest import TINY_PHANTOM, ingest_tiny_phantom
from tanq_ray.cli import main
from test_tracking_outage import Server

pytestmark = pytest.mark.slow  # about 3 minutes on 2 cores: an mlflow server, an ingest, two trainings, a browser

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCREENSHOTS = {"compare": "mlflow-compare.png", "translation": "mlflow-translation.png"}
MAX_SCREENSHOT_BYTES = 300_000
EXPERIMENT = "ui"
SHARED_METRICS = ("structure_score", "loss_G", "loss_G_adv", "loss_D")  # every translator logs these names
RUNS = {
    "tanq": [
        "models.tanq.ngf=8", "models.tanq.ndf=8", "models.tanq.n_blocks=2", "models.tanq.antialias=false",
        "models.tanq.nce_layers=[0,4,8,10,11]", "models.tanq.num_patches=32", "models.tanq.epochs=2",
    ],
    "cyclegan": ["models.cyclegan.ngf=8", "models.cyclegan.ndf=8", "models.cyclegan.n_blocks=2", "models.cyclegan.epochs=2"],
}  # fmt: skip


def chromium_binary() -> str:
    """Debian's chromium, installed with apt-get when absent; a skip only where it cannot be installed."""
    found = shutil.which("chromium")
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and `apt-get install chromium` needs root")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:  # an empty or stale package list
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    found = shutil.which("chromium")
    assert found is not None, f"apt-get could not install chromium:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return found


# ---- a minimal DevTools-protocol client (aiohttp comes with mlflow and ray) ----


class Page:
    """One browser tab: DevTools commands, JavaScript in the page, polling for a condition."""

    def __init__(self, socket: Any) -> None:
        self.socket, self.last_id = socket, 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.socket.send_json({"id": self.last_id, "method": method, "params": params})
        while True:  # events (no domain is enabled, so few) are dropped
            message = await self.socket.receive_json(timeout=120)
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def js(self, expression: str) -> Any:
        """The JSON value of ``expression`` (a promise is awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:200]}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    async def until(self, expression: str, seconds: float = 60) -> bool:
        """Poll ``expression`` until it is truthy; False when ``seconds`` pass first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if await self.js(expression):
                    return True
            except RuntimeError:  # the page is still loading
                pass
            await asyncio.sleep(0.3)
        return False

    async def open(self, url: str, ready: str, what: str) -> None:
        await self.send("Page.navigate", url=url)
        if not await self.until(ready, 90):
            text = await self.js("document.body ? document.body.innerText.slice(0, 1500) : ''")
            raise AssertionError(f"{what} did not render ({ready}) at {url}; the page shows:\n{text}")

    async def click(self, selector: str) -> bool:
        """Click the first element matching ``selector``; False when there is none."""
        return await self.js(f"(e => e ? (e.click(), true) : false)(document.querySelector({json.dumps(selector)}))")

    async def type(self, selector: str, text: str) -> None:
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def viewport(self, width: int, height: int) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    async def screenshot(self, box: dict[str, float]) -> bytes:
        clip = {**box, "scale": 1}
        return base64.b64decode((await self.send("Page.captureScreenshot", format="png", clip=clip))["data"])


async def with_browser(binary: str, work: Any) -> Any:
    """Run ``await work(page)`` in a fresh headless Chromium; the browser and its children end with it."""
    import aiohttp

    profile = Path(tempfile.mkdtemp(prefix="tanq-chromium-"))
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port within 60 s"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                target = next(t for t in await answer.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                return await work(Page(socket))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)


# ---- what the UI shows ----


@dataclass
class Rendered:
    """What the MLflow UI showed; every table lists one value per run, in ``run_ids`` order."""

    run_ids: list[str]  # the compare page's column order
    params: dict[str, list[str]]
    differing_params: set[str]  # rows the compare page marks as differing
    metrics: dict[str, list[str]]
    images: dict[str, dict[str, list[dict[str, Any]]]]  # chart view: image key -> run id -> pictures shown
    compare_artifacts: str  # the compare page's Artifacts section, as text
    screenshots: dict[str, bytes] = field(default_factory=dict)


def panel(title: str) -> str:
    """JavaScript: the compare page's collapsible section headed ``title``."""
    return (
        "[...document.querySelectorAll('.du-bois-light-collapse-item')].find("
        f"i => i.querySelector('.du-bois-light-collapse-header').innerText.trim() === {json.dumps(title)})"
    )


READ_TABLE = """(panel => [...panel.querySelectorAll('tr')].map(row => ({
  name: row.querySelector('.head-value').innerText.trim(),
  values: [...row.querySelectorAll('.data-value')].map(cell => cell.innerText.trim()),
  differs: row.classList.contains('diff-row'),
})))(%s)"""

# the metric table: a names grid and a values grid (scrolling the latter scrolls both) that render only rows in view
READ_METRICS = """(async panel => {
  const [namesGrid, valuesGrid] = panel.querySelectorAll('.ReactVirtualized__Grid');
  const names = {}, values = {};
  for (let top = 0; ; top += valuesGrid.clientHeight / 2) {
    valuesGrid.scrollTop = top;
    await new Promise(done => setTimeout(done, 250));
    for (const cell of namesGrid.firstElementChild.children) names[parseFloat(cell.style.top)] = cell.innerText.trim();
    for (const cell of valuesGrid.firstElementChild.children)
      values[parseFloat(cell.style.top) + ' ' + parseFloat(cell.style.left)] = cell.innerText.trim();
    if (top >= valuesGrid.firstElementChild.scrollHeight) break;
  }
  valuesGrid.scrollTop = 0;
  await new Promise(done => setTimeout(done, 250));
  return {names, values};
})(%s)"""

IMAGE_CARDS = """[...document.querySelectorAll('[data-testid=experiment-view-compare-runs-card]')].map(card => ({
  key: card.querySelector('h4') && card.querySelector('h4').getAttribute('title'),
  pictures: [...card.querySelectorAll('img')].map(img => ({src: img.getAttribute('src') || '', width: img.naturalWidth})),
}))"""

ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'


def rows_by_column(metrics: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """The scrolled metric grids as {metric: [value per column]} (columns ordered by their x offset)."""
    lefts = sorted({float(key.split()[1]) for key in metrics["values"]})
    table: dict[str, list[str]] = {}
    for top, name in metrics["names"].items():
        table[name] = [metrics["values"].get(f"{float(top):g} {left:g}", "") for left in lefts]
    return table


def pictures_by_run(cards: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Image cards as {image key: {run id: [{path, width}]}} from each picture's get-artifact address."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for card in cards:
        for picture in card["pictures"]:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(picture["src"]).query)
            if "run_uuid" in query:
                entry = {"path": query["path"][0], "width": picture["width"]}
                found.setdefault(card["key"], {}).setdefault(query["run_uuid"][0], []).append(entry)
    return found


async def read_compare_page(page: Page, url: str, experiment_id: str, run_ids: list[str]) -> dict[str, Any]:
    ids = json.dumps(run_ids, separators=(",", ":"))
    address = f"{url}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment_id])}"
    ready = (
        f"(p => p && p.querySelectorAll('tr').length > 0)({panel('Parameters')}) && "
        f"(p => p && p.querySelectorAll('.ReactVirtualized__Grid [style*=top]').length > 0)({panel('Metrics')})"
    )
    await page.open(address, ready, "the compare page's parameter and metric tables")
    details = await page.js(READ_TABLE % panel("Run details"))
    return {
        "run_ids": next(row["values"] for row in details if row["name"].startswith("Run ID")),
        "params": await page.js(READ_TABLE % panel("Parameters")),
        "metrics": await page.js(READ_METRICS % panel("Metrics")),
        "artifacts": await page.js(f"(p => p ? p.innerText : '')({panel('Artifacts')})"),
    }


async def compare_screenshot(page: Page) -> bytes:
    """The compare page from the run names to the metric table, parameters narrowed to the differing ones."""
    await page.click(ASSISTANT_CLOSE)
    await page.js(f"({panel('Visualizations')}).querySelector('.du-bois-light-collapse-header').click()")
    await page.click('button[aria-label="Parameters - Show diff only"]')
    await page.viewport(1400, 4000)  # the page scrolls inside its frame: a tall window shows it all
    await asyncio.sleep(1.5)
    # the parameter table scrolls in its own box: show its end, where train.model is; the metric grids at their top
    await page.js(f"""(() => {{
      let box = ({panel('Parameters')}).querySelector('table');
      while (box && box.scrollHeight <= box.clientHeight + 1) box = box.parentElement;
      if (box) box.scrollTop = box.scrollHeight;
      ({panel('Metrics')}).querySelectorAll('.ReactVirtualized__Grid').forEach(grid => {{ grid.scrollTop = 0; }});
    }})()""")
    await asyncio.sleep(1)
    box = await page.js(f"""(() => {{
      const details = ({panel('Run details')}).getBoundingClientRect();
      const metrics = ({panel('Metrics')}).getBoundingClientRect();
      return {{x: details.left - 8, y: details.top - 8, width: details.width + 16, height: metrics.bottom - details.top + 16}};
    }})()""")
    return await page.screenshot(box)


async def read_chart_view(page: Page, url: str, experiment_id: str, run_names: list[str]) -> list[dict[str, Any]]:
    """The experiment page's chart view with the stage runs shown, narrowed to the image cards of ``translation``."""
    await page.viewport(1400, 900)
    address = f"{url}/#/experiments/{experiment_id}/runs?compareRunsMode=CHART"
    await page.open(address, "document.body && document.body.innerText.includes('matching runs')", "the experiment's chart view")
    await page.click(ASSISTANT_CLOSE)
    # stage runs are children of their command's run: expand every parent row so that the charts include them
    expanders = "document.querySelectorAll('[data-component-id$=\"runnamecellrenderer.tsx_46\"]')"
    assert await page.until(f"{expanders}.length >= {len(run_names)}", 30), "the runs table shows no parent runs to expand"
    await page.js(f"{expanders}.forEach(button => button.click())")
    shown = " && ".join(f"document.body.innerText.includes({json.dumps(name)})" for name in run_names)
    assert await page.until(shown, 30), f"the chart view does not list the runs {run_names}"
    await page.type('input[placeholder="Search metric charts"]', "translation")
    enough = f"c.pictures.filter(p => p.width > 0).length >= {len(run_names)}"
    loaded = f"({IMAGE_CARDS}).some(c => c.key === 'translation' && {enough})"
    await page.until(loaded, 30)  # the assertions say what is missing
    return await page.js(IMAGE_CARDS)


async def translation_screenshot(page: Page, url: str, experiment_id: str, run_id: str, picture: str) -> bytes:
    """A run page's artifact view with one logged ``translation`` picture open."""
    await page.viewport(1200, 760)
    address = f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{picture}"
    await page.open(address, "[...document.images].some(i => i.src.startsWith('blob:') && i.naturalWidth > 0)", "the translation picture")
    await page.click(ASSISTANT_CLOSE)
    await asyncio.sleep(1.5)
    return await page.screenshot({"x": 0, "y": 0, "width": 1200, "height": 760})


def render(binary: str, url: str, experiment_id: str, runs: dict[str, str], client: MlflowClient) -> Rendered:
    """Everything the tests read from the UI of ``runs`` ({run name: id}), in one browser session."""
    tanq_run = runs["train-tanq"]
    translation = sorted(
        (a.path for a in client.list_artifacts(tanq_run, "images") if a.path.startswith("images/translation+") and a.path.endswith(".png")),
        key=lambda path: int(path.split("+step+")[1].split("+")[0]),
    )[-1]  # the last epoch's picture

    async def work(page: Page) -> Rendered:
        compare = await read_compare_page(page, url, experiment_id, list(runs.values()))
        compare_png = await compare_screenshot(page)
        cards = await read_chart_view(page, url, experiment_id, list(runs))
        translation_png = await translation_screenshot(page, url, experiment_id, tanq_run, translation)
        return Rendered(
            run_ids=compare["run_ids"],
            params={row["name"]: row["values"] for row in compare["params"]},
            differing_params={row["name"] for row in compare["params"] if row["differs"]},
            metrics=rows_by_column(compare["metrics"]),
            images=pictures_by_run(cards),
            compare_artifacts=compare["artifacts"],
            screenshots={"compare": compare_png, "translation": translation_png},
        )

    return asyncio.run(with_browser(binary, work))


# ---- the runs and the UI ----


@dataclass
class UI:
    client: MlflowClient
    runs: dict[str, str]  # run name -> id
    rendered: Rendered
    folder: Path  # where the screenshots were written

    def column(self, run_name: str) -> int:
        return self.rendered.run_ids.index(self.runs[run_name])


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_binary()


@pytest.fixture(scope="module")
def ui(chromium: str, tmp_path_factory: pytest.TempPathFactory, ray_local) -> Iterator[UI]:
    """A TANQ and a CycleGAN run on a real ``mlflow server``, and what the UI shows of them."""
    root = tmp_path_factory.mktemp("mlflow_ui")
    (root / "server").mkdir()
    server = Server(root / "server")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_WORKERS", "1")  # one process: on a busy machine uvicorn's supervisor kills slow-starting workers
            server.start()
        out = ingest_tiny_phantom(root / "data")
        common = [
            f"output_dir={out}", f"tracking.tracking_uri={server.url}", f"tracking.experiment={EXPERIMENT}", *TINY_PHANTOM,
            "train.batch_size=2", "train.visual_every=1", "sweep.score_slices=8",
        ]  # fmt: skip
        for model, settings in RUNS.items():
            assert main(["train", f"model={model}", *common, *settings]) == 0
        client = MlflowClient(server.url)
        experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        trained = client.search_runs([experiment_id], "tags.stage = 'train'", order_by=["attributes.start_time"])
        runs = {run.info.run_name: run.info.run_id for run in trained}
        assert list(runs) == ["train-tanq", "train-cyclegan"]
        rendered = render(chromium, server.url, experiment_id, runs, client)
        folder = root / "screenshots"
        folder.mkdir()
        for name, data in rendered.screenshots.items():
            (folder / SCREENSHOTS[name]).write_bytes(fit_for_docs(data))
        yield UI(client, runs, rendered, folder)
    finally:
        server.stop()


def fit_for_docs(png: bytes) -> bytes:
    """``png`` under the docs' size limit: optimised, else reduced to a 256-colour palette (UI screenshots stay sharp)."""
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    for candidate in (picture, picture.quantize(256, dither=Image.Dither.NONE)):
        buffer = io.BytesIO()
        candidate.save(buffer, "PNG", optimize=True)
        if buffer.tell() <= MAX_SCREENSHOT_BYTES:
            return buffer.getvalue()
    return buffer.getvalue()  # the test on sizes says by how much


# ---- the checks ----


def number(text: str) -> float:
    """A table cell as a number; NaN for 'NaN', blank or anything else."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def test_compare_view_shows_the_parameter_that_differs(ui: UI) -> None:
    """The translator runs log the same ``train.*`` keys; ``train.model`` differs and is marked so, shared values are not."""
    shown = ui.rendered
    assert sorted(shown.run_ids) == sorted(ui.runs.values())
    tanq, cyclegan = ui.column("train-tanq"), ui.column("train-cyclegan")
    assert "train.model" in shown.params, sorted(shown.params)
    model = shown.params["train.model"]
    assert (model[tanq], model[cyclegan]) == ("tanq", "cyclegan")
    assert "train.model" in shown.differing_params
    assert shown.params["ingest.image_size"] == ["32", "32"] and "ingest.image_size" not in shown.differing_params


def test_compare_view_lines_up_the_shared_metrics(ui: UI) -> None:
    """Each shared metric is one row with a number for both runs: the runs' last values, never NaN or blank."""
    shown = ui.rendered.metrics
    for name in SHARED_METRICS:
        assert name in shown, f"no row {name} among {sorted(shown)}"
        for run_name, run_id in ui.runs.items():
            text = shown[name][ui.column(run_name)]
            value = number(text)
            assert math.isfinite(value), f"{name} of {run_name} shows {text!r}"
            logged = ui.client.get_run(run_id).data.metrics[name]
            assert math.isclose(value, logged, rel_tol=0.01, abs_tol=1e-3), (name, run_name, text, logged)
    own = shown["loss_nce_x"]  # TANQ's own term: a number beside the CycleGAN run's NaN
    assert math.isfinite(number(own[ui.column("train-tanq")])) and own[ui.column("train-cyclegan")] == "NaN"


def test_compare_view_lists_the_newest_translation_of_both_runs(ui: UI) -> None:
    """Compare shows the top-level files both runs have: each translator run's newest ``translation.png``."""
    shown = ui.rendered.compare_artifacts
    assert "translation.png" in shown and "No common artifacts" not in shown, shown


def test_chart_view_shows_both_translations_under_one_image_key(ui: UI) -> None:
    """The experiment's chart view has one ``translation`` card with a loaded picture of each run."""
    images = ui.rendered.images
    assert "translation" in images, f"image cards: {sorted(images)}"
    for run_name, run_id in ui.runs.items():
        pictures = images["translation"].get(run_id, [])
        assert pictures, f"the translation card has no picture of {run_name}: {images['translation']}"
        assert all(p["path"].startswith("images/translation+step+") and p["width"] > 0 for p in pictures), pictures


def test_screenshots_for_the_docs(ui: UI) -> None:
    """Both screenshots are real pictures under the size limit; ``TANQ_UPDATE_DOCS_SCREENSHOTS=1`` copies them to docs/."""
    from PIL import Image

    for name in SCREENSHOTS.values():
        path = ui.folder / name
        assert path.stat().st_size <= MAX_SCREENSHOT_BYTES, (name, path.stat().st_size)
        picture = Image.open(path).convert("L")
        assert picture.width >= 600 and picture.height >= 400, (name, picture.size)
        histogram = picture.histogram()
        background = max(range(256), key=histogram.__getitem__)
        drawn = sum(n for level, n in enumerate(histogram) if abs(level - background) > 40) / (picture.width * picture.height)
        assert drawn > 0.005, f"{name} is {1 - drawn:.1%} background: a blank or loading page"  # tables of text: ~1.5 %
        if os.environ.get("TANQ_UPDATE_DOCS_SCREENSHOTS") == "1":
            shutil.copyfile(path, DOCS / name)
