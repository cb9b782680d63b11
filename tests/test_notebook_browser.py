"""The notebooks' widgets in a real browser: JupyterLab on loopback, driven in headless Chromium.

Papermill and CI only ever run the static fallbacks (no widget front end). Here a JupyterLab
server (temporary config, settings and runtime folders; token auth on 127.0.0.1) serves copies of
notebooks 01 and 04 with ``quick=True`` injected the way papermill does; Playwright drives
Debian's system Chromium (``/usr/bin/chromium``: never ``playwright install``). The test runs the
cells a widget needs, moves its controls and checks, on screenshots of the rendered figure, that
the picture changes after every move, and that no cell and no widget callback raised.

Screenshots go to a temporary folder, or to ``DUALLORA_SCREENSHOTS=DIR`` when set (``.ci/run``
sets ``reports/browser``). Needs the apt packages ``chromium`` (and ``chromium-driver``) and the
dev extras ``jupyterlab`` and ``playwright``.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from duallora import paths
from duallora.notebooks import experiments

CHROMIUM = Path(os.environ.get("DUALLORA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CELL_TIMEOUT_MS = 300_000   # generous: `make test` runs this beside every other lane on 2 cores
QUEUED_TIMEOUT_MS = 20_000  # a clicked run shows "[*]" (queued or running) within this
RUN_ATTEMPTS = 3
REDRAW_TIMEOUT_S = 30.0
MIN_CHANGED = 0.002  # share of pixels that must change for "the picture changed"


# -- the workspace the notebooks see -------------------------------------------------------
@pytest.fixture(scope="module")
def quick_data(tmp_path_factory: pytest.TempPathFactory, phantom_raw_dir: Path,
               harmonized_dir: Path) -> Path:
    """A quick-mode ``data_dir`` holding the session's small phantom cohort (linked, not
    rebuilt)."""
    from conftest import TEST_COHORT_SCALE, TEST_COHORT_SEED

    data = tmp_path_factory.mktemp("browser_data")
    ws = experiments.workspace(data, quick=True, seed=TEST_COHORT_SEED)
    ws.raw.symlink_to(phantom_raw_dir, target_is_directory=True)
    shutil.copytree(harmonized_dir, ws.harmonized, copy_function=os.symlink)
    (ws.harmonized / experiments.COHORT_MARKER).write_text(json.dumps(
        {"settings": {"phantom_scale": TEST_COHORT_SCALE, "seed": TEST_COHORT_SEED}}))
    assert experiments.ensure_cohort(ws) == ws.harmonized  # reused, not rebuilt
    return data


@pytest.fixture(scope="module")
def quick_run(quick_data: Path) -> Path:
    """One finished quick Med-DualLoRA run with notebook 04's settings, in ``quick_data``."""
    from conftest import TEST_COHORT_SEED

    ws = experiments.workspace(quick_data, quick=True, seed=TEST_COHORT_SEED)
    return experiments.ensure_runs(ws, experiments.strategy_specs(["med_duallora"], rank=4),
                                   progress=False)["med_duallora"]


def prepared_notebook(name: str, folder: Path, data_dir: Path, out_dir: Path,
                      extra: dict[str, str] | None = None) -> Path:
    """A copy of ``notebooks/NAME`` with quick-mode parameters injected as papermill does;
    ``extra`` inserts a cell after the first cell whose source contains the key."""
    import nbformat  # here, not at the top: seconds to import, and every worker collects us
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(paths.notebooks_dir() / name))
    nb = parameterize_notebook(nb, {"quick": True, "data_dir": str(data_dir),
                                    "out_dir": str(out_dir), "seed": 0})
    for marker, source in (extra or {}).items():
        index = next(i for i, c in enumerate(nb.cells) if marker in c.source)
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    nb.metadata.pop("papermill", None)
    path = folder / name
    nbformat.write(nb, path)
    return path


# -- JupyterLab and Chromium ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lab:
    """A running JupyterLab server: its root folder, base URL, token and log file."""

    def __init__(self, root: Path, url: str, token: str, log: Path):
        self.root, self.url, self.token, self.log = root, url, token, log

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # every cell rendered (no virtual scrolling), so element screenshots never come out blank
    tracker = base / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "defer"}))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline one
    env.update(JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(base / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(paths.REPO_ROOT),
                                                        env.get("PYTHONPATH")])))
    port, token = free_port(), secrets.token_hex(16)
    log = base / "jupyterlab.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.news_url=None", "--allow-root"],
            env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + log.read_text()[-3000:]) from None
                time.sleep(0.5)
        yield Lab(root, url, token, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    assert CHROMIUM.is_file(), (f"{CHROMIUM} not found: install Debian's chromium and "
                                "chromium-driver (apt-get install -y chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # an empty user-data-dir
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DUALLORA_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- driving a notebook --------------------------------------------------------------------
class NotebookPage:
    """One notebook open in JupyterLab: run chosen cells, screenshot a widget's figure."""

    def __init__(self, page, nb_path: Path, shots: Path, prefix: str):
        import nbformat

        self.page, self.shots, self.prefix = page, shots, prefix
        self.sources = [c.source for c in nbformat.read(nb_path, as_version=4).cells]
        self.cells = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell")
        self.cells.first.wait_for(timeout=CELL_TIMEOUT_MS)
        page.wait_for_function(f"document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden)"
                               f" .jp-Cell').length >= {len(self.sources)}",
                               timeout=CELL_TIMEOUT_MS)

    def index(self, marker: str) -> int:
        return next(i for i, source in enumerate(self.sources) if marker in source)

    def run(self, marker: str) -> int:
        """Run the first cell containing ``marker`` and wait for it; fail on a traceback."""
        started = time.monotonic()
        index = self.index(marker)
        cell = self.cells.nth(index)
        prompt = cell.locator(".jp-InputArea-prompt")
        try:
            for attempt in range(RUN_ATTEMPTS):
                prompt.click()  # select it, then the toolbar's run
                self.page.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-toolbar "
                                  "[data-command='notebook:run-cell-and-select-next']").click()
                # On a loaded machine a click can land while the page is still busy and be
                # lost (the prompt stays "[ ]": nothing queued); click again then. A cell
                # that is queued or running shows "[*]" and is only waited for.
                try:
                    self.page.wait_for_function(
                        "el => /\\[(\\d+|\\*)\\]/.test(el.textContent)",
                        arg=prompt.element_handle(), timeout=QUEUED_TIMEOUT_MS)
                    break
                except Exception:
                    if attempt == RUN_ATTEMPTS - 1:
                        raise
            self.page.wait_for_function(
                "el => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(),
                timeout=CELL_TIMEOUT_MS)
        except Exception:
            self.page.screenshot(path=str(self.shots / f"{self.prefix}_failed_cell{index}.png"))
            raise
        text = cell.locator(".jp-Cell-outputArea").first.inner_text()
        assert "Traceback" not in text, (
            f"cell {index} ({marker!r}) failed in the browser:\n{text[-2000:]}")
        print(f"{self.prefix}: cell {index} ({marker.splitlines()[0][:40]!r}) "
              f"{time.monotonic() - started:.1f} s")
        return index

    def figure(self, index: int):
        return self.cells.nth(index).locator(".widget-output img").last

    def snapshot(self, index: int, name: str) -> np.ndarray:
        """The widget's rendered figure as RGB pixels (saved as ``PREFIX_NAME.png``): taken
        once the image is decoded and two captures in a row agree (no half-drawn frame)."""
        from PIL import Image

        image = self.figure(index)
        image.wait_for(timeout=CELL_TIMEOUT_MS)
        self.page.wait_for_function("el => el.complete && el.naturalWidth > 0",
                                    arg=image.element_handle(), timeout=CELL_TIMEOUT_MS)
        image.scroll_into_view_if_needed()
        image.evaluate("el => el.decode()")  # fully decoded, not painted tile by tile
        previous = None
        for _ in range(20):
            data = image.screenshot(path=str(self.shots / f"{self.prefix}_{name}.png"))
            pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)
            if previous is not None and previous.shape == pixels.shape \
                    and not changed_share(previous, pixels):
                return pixels
            previous = pixels
            time.sleep(0.5)
        raise AssertionError(f"{self.prefix}: the figure never settled ({name})")

    def changed_after(self, index: int, before: np.ndarray, name: str,
                      action: Callable[[], None]) -> float:
        """Do ``action``; wait until the figure is redrawn differently; the changed share."""
        action()
        deadline = time.monotonic() + REDRAW_TIMEOUT_S
        while True:
            try:
                after = self.snapshot(index, name)
            except Exception:  # the image was replaced while being captured: try again
                after = None
            if after is not None:
                share = changed_share(before, after)
                if share >= MIN_CHANGED or time.monotonic() > deadline:
                    return share
            elif time.monotonic() > deadline:
                raise AssertionError(f"{self.prefix}: no figure after {name}")
            time.sleep(0.3)


def changed_share(before: np.ndarray, after: np.ndarray) -> float:
    """Share of pixels that differ clearly (any channel by more than 24 of 255)."""
    if before.shape != after.shape:
        return 1.0
    return float((np.abs(before - after).max(axis=2) > 24).mean())


def slider_handle(page, cell, label: str):
    return cell.locator(".widget-slider", has_text=label).locator(".noUi-handle")


def press_on(handle, key: str, times: int = 1) -> None:
    handle.focus()
    for _ in range(times):
        handle.press(key)


def open_notebook(context, lab: Lab, nb_path: Path, shots: Path, prefix: str) -> NotebookPage:
    page = context.new_page()
    # On a loaded machine JupyterLab can open the notebook before it has read the kernel
    # specs and then asks which kernel to start (a modal "Select Kernel" dialog that blocks
    # every click; seen in CI): whenever it shows, accept its preselected Python 3 kernel.
    page.add_locator_handler(page.locator(".jp-Dialog", has_text="Select Kernel"),
                             lambda dialog: dialog.locator(".jp-mod-accept").click())
    page.goto(lab.notebook_url(nb_path.name), timeout=CELL_TIMEOUT_MS)
    return NotebookPage(page, nb_path, shots, prefix)


def assert_kernel_clean(lab: Lab, page) -> None:
    """No traceback anywhere on the page (widget outputs included) or in the kernel's log."""
    text = page.locator(".jp-NotebookPanel:visible").inner_text()
    assert "Traceback" not in text, text[text.find("Traceback"):][:2000]
    unexplained = log_tracebacks(lab.log_text())
    assert not unexplained, "\n".join(unexplained)[:2000]


def log_records(log: str) -> list[str]:
    """The server log as records: a line that starts in column 0 and its indented lines."""
    records: list[str] = []
    for line in log.splitlines():
        if records and line[:1].isspace():
            records[-1] += "\n" + line
        else:
            records.append(line)
    return records


def log_tracebacks(log: str) -> list[str]:
    """The tracebacks of the server log, less those of a kernel JupyterLab dropped at once.

    On a loaded machine JupyterLab can start two kernels for one notebook and shut the first
    down while it is still importing (seen in CI: started, started, shutdown within 0.2 s). That
    kernel prints a KeyboardInterrupt traceback from its start-up imports and the server logs
    an error for its websocket. Both are JupyterLab's race, not our code: a kernel shut down
    before any client connected explains one such start-up traceback and its websocket errors.
    Everything else (a widget callback that raises, a failing cell) still counts.
    """
    records = log_records(log)
    ids = {kind: {r.rsplit(" ", 1)[-1].rstrip(".") for r in records if f"] {kind}: " in r
                  or f"] {kind} " in r}
           for kind in ("Kernel shutdown", "Connecting to kernel")}
    dropped = ids["Kernel shutdown"] - ids["Connecting to kernel"]
    startups_left = len(dropped)
    found = []
    for index, record in enumerate(records):
        if "Traceback" not in record:
            continue
        following = records[index + 1] if index + 1 < len(records) else ""
        if (startups_left and record.startswith("Traceback") and "ipykernel_launcher" in record
                and following == "KeyboardInterrupt"):
            startups_left -= 1
            continue
        if any(f"/api/kernels/{kernel}/" in record for kernel in dropped):
            continue
        found.append(record + ("\n" + following if record.startswith("Traceback") else ""))
    return found


# -- the tests -----------------------------------------------------------------------------
def test_cine_viewer_in_jupyterlab(lab: Lab, browser, quick_data: Path, shots: Path) -> None:
    nb_path = prepared_notebook("01_data_harmonization.ipynb", lab.root, quick_data,
                                lab.root / "reports")
    nb = open_notebook(browser, lab, nb_path, shots, "01_viewer")
    for marker in ("# Parameters", "# Parameters\n", "ws = experiments.workspace",
                   "harmonized = experiments.ensure_cohort", "experiments.subject_records"):
        nb.run(marker)
    viewer = nb.run("display(CineViewer(catalogue))")
    cell = nb.cells.nth(viewer)
    start = nb.snapshot(viewer, "0_start")
    overlay = cell.locator(".widget-checkbox input[type=checkbox]")
    share = nb.changed_after(viewer, start, "1_overlay_off", lambda: overlay.click())
    assert share >= MIN_CHANGED, f"overlay toggle changed {share:.4f} of the pixels"
    no_overlay = nb.snapshot(viewer, "1_overlay_off")
    slice_handle = slider_handle(nb.page, cell, "slice")
    share = nb.changed_after(viewer, no_overlay, "2_slice",
                             lambda: press_on(slice_handle, "ArrowRight", 2))
    assert share >= MIN_CHANGED, f"moving the slice slider changed {share:.4f} of the pixels"
    moved = nb.snapshot(viewer, "2_slice")
    frame_handle = slider_handle(nb.page, cell, "frame")
    share = nb.changed_after(viewer, moved, "3_frame",
                             lambda: press_on(frame_handle, "ArrowRight", 3))
    assert share >= MIN_CHANGED, f"moving the frame slider changed {share:.4f} of the pixels"
    assert_kernel_clean(lab, nb.page)
    nb.page.close()


def test_adapter_norm_explorer_in_jupyterlab(lab: Lab, browser, quick_data: Path,
                                             quick_run: Path, shots: Path) -> None:
    # only the Med-DualLoRA run that the fixture trained (reused), not every baseline
    stub = ("runs = run_reader.load_runs(experiments.ensure_runs(ws, experiments.strategy_specs(\n"
            "    ['med_duallora'], rounds=rounds, rank=lora_rank), progress=False))")
    nb_path = prepared_notebook("04_med_duallora.ipynb", lab.root, quick_data,
                                lab.root / "reports", extra={'print("foundation model:"': stub})
    nb = open_notebook(browser, lab, nb_path, shots, "04_explorer")
    for marker in ("# Parameters", "# Parameters\n", "ws = experiments.workspace",
                   "['med_duallora'], rounds=rounds", "norms = runs[\"med_duallora\"].norms"):
        nb.run(marker)
    explorer = nb.run("display(AdapterNormExplorer(norms))")
    cell = nb.cells.nth(explorer)
    start = nb.snapshot(explorer, "0_start")
    vendor = cell.locator(".widget-dropdown", has_text="vendor").locator("select")
    options = vendor.locator("option").all_inner_texts()
    assert len(options) >= 2, f"expected several vendors to pick from, got {options}"
    share = nb.changed_after(explorer, start, "1_vendor",
                             lambda: vendor.select_option(label=options[1]))
    assert share >= MIN_CHANGED, f"picking a vendor changed {share:.4f} of the pixels"
    picked = nb.snapshot(explorer, "1_vendor")
    block = cell.locator(".widget-dropdown", has_text="block").locator("select")
    blocks = block.locator("option").all_inner_texts()
    share = nb.changed_after(explorer, picked, "2_block",
                             lambda: block.select_option(label=blocks[-1]))
    assert share >= MIN_CHANGED, f"picking a block changed {share:.4f} of the pixels"
    one_block = nb.snapshot(explorer, "2_block")
    round_handle = slider_handle(nb.page, cell, "round")
    share = nb.changed_after(explorer, one_block, "3_round",
                             lambda: press_on(round_handle, "ArrowLeft"))
    assert share >= MIN_CHANGED, f"moving the round slider changed {share:.4f} of the pixels"
    assert_kernel_clean(lab, nb.page)
    nb.page.close()


def test_only_a_dropped_kernels_start_up_interrupt_is_forgiven_in_the_server_log() -> None:
    started = ("[I 10:00:00.1 ServerApp] Kernel started: aaa\n"
               "[I 10:00:00.2 ServerApp] Kernel started: bbb\n")
    dropped = "[I 10:00:00.3 ServerApp] Kernel shutdown: aaa\n"
    startup_interrupt = ("Traceback (most recent call last):\n"
                         '  File "/venv/site-packages/ipykernel_launcher.py", line 16\n'
                         "    from ipykernel import kernelapp as app\n"
                         "KeyboardInterrupt\n"
                         "[E 10:00:00.6 ServerApp] Uncaught exception GET "
                         "/api/kernels/aaa/channels\n"
                         "    Traceback (most recent call last):\n"
                         "    AttributeError: 'NoneType' object has no attribute 'x'\n")
    connected = "[I 10:00:01.0 ServerApp] Connecting to kernel bbb.\n"
    callback_error = ("Traceback (most recent call last):\n"
                      '  File "/repo/duallora/notebooks/widgets.py", line 9, in redraw\n'
                      "ValueError: boom\n")
    assert log_tracebacks(started + dropped + startup_interrupt + connected) == []
    # the same interrupt with no kernel dropped, or any other traceback, still fails the test
    assert len(log_tracebacks(started + startup_interrupt + connected)) == 2
    assert log_tracebacks(started + dropped + startup_interrupt + connected
                          + callback_error) == [callback_error.strip()]
