"""The web app (``python -m dagan.app``): the form -> demo mapping, upload checks, the temporary folder,
concurrent requests, and the real page driven by headless Chromium (selenium; skipped without a browser)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO
from dagan.errors import InputError, NoFaceError
from dagan.inference import cli
from dagan.inference.pipeline import AnimateOptions
from dagan.io.video import VideoReader, probe

app = pytest.importorskip("dagan.app")

pytestmark = pytest.mark.usefixtures("one_thread")

PORTRAIT = DATA / "source_lp_d10frame0_256.png"
CLIP = DATA / "drv_lp_d9_audio_256.mp4"  # 200 frames at 25 fps, AAC audio


def _frames(path) -> np.ndarray:
    return np.stack(list(VideoReader(path))).astype(np.int16)


def _form(**changes):
    defaults = AnimateOptions()
    values = {o.dest: o.default(defaults) for o in app.form_options()}
    values.update(changes)
    return values


# ------------------------------------------------------------------------------------------ no gradio
def test_without_gradio_one_line_naming_the_extra(tmp_path):
    code = ("import sys, runpy; sys.modules['gradio'] = None; import dagan; "
            "runpy.run_module('dagan.app', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and '.[app]' in lines[0] and "Gradio" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_import_dagan_does_not_import_gradio():
    code = "import sys, dagan, dagan.app; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_server_defaults_are_local_and_limited():
    args = app.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and not args.share and args.max_upload_mb == app.DEFAULT_MAX_UPLOAD_MB


# ------------------------------------------------------------------------------------------ the form
def test_form_defaults_are_the_demo_defaults():
    defaults = AnimateOptions()
    options = app.form_options()
    assert [o.dest for o in options] == [o.dest for o in app.FORM_OPTIONS]
    assert {"relative", "adapt_scale", "crop", "paste_back", "smoothing", "max_frames"} <= {o.dest for o in options}
    assert app.options_from_form({o.dest: o.default(defaults) for o in options}) == defaults
    assert vars(cli.build_parser().parse_args([])) == dict(vars(defaults), cpu=False, debug=False)


def test_form_values_become_demo_options():
    values = _form(relative="absolute", adapt_scale=False, crop=True, paste_back=True, smoothing=0.5, max_frames=7)
    options = app.options_from_form(values, result_video="r.mp4")
    assert (options.relative, options.adapt_scale, options.crop, options.paste_back, options.smoothing,
            options.max_frames, options.result_video) == (False, False, True, True, 0.5, 7, "r.mp4")
    options = app.options_from_form(_form(smooth=2.5, size="128 px"))
    assert (options.smooth, options.size) == (2.5, 128)
    smooth = next(o for o in app.FORM_OPTIONS if o.dest == "smooth")
    assert smooth.value(0.0) is None  # 0 = off = the demo's default (None)
    smoothing = next(o for o in app.FORM_OPTIONS if o.dest == "smoothing")
    with pytest.raises(InputError, match="outside"):
        smoothing.value(3.0)
    motion = next(o for o in app.FORM_OPTIONS if o.dest == "relative")
    with pytest.raises(InputError, match="unknown choice"):
        motion.value("sideways")


def test_options_the_demo_lacks_are_left_off_the_page(monkeypatch):
    from dagan.app import form

    extra = app.FormOption("no_such_option", "Not in the demo", "checkbox", flags=("--no_such_option", None))
    monkeypatch.setattr(form, "FORM_OPTIONS", form.FORM_OPTIONS + (extra,))
    assert [o.dest for o in app.form_options()] == [o.dest for o in app.FORM_OPTIONS]


def test_models_from_checkpoints_and_a_user_folder(tmp_path):
    user = tmp_path / "my-models"
    (user / "mine").mkdir(parents=True)
    (user / "mine" / "config.yaml").write_text("model: {}\n")
    (user / "single.pt").write_bytes(b"x")
    (user / "notes.txt").write_text("not a model")
    (user / "empty-folder").mkdir()
    models = app.find_models(app.model_folders(str(user)))
    assert list(models)[0] == app.SHIPPED_MODEL and models[app.SHIPPED_MODEL] is None
    assert models["my-models/mine"] == str(user / "mine") and models["my-models/single.pt"] == str(user / "single.pt")
    assert not any("notes" in label or "empty" in label for label in models)
    assert app.find_models([tmp_path / "missing"]) == {app.SHIPPED_MODEL: None}


def test_messages_name_files_and_page_labels_not_paths_and_flags():
    text = "no face found in source image /srv/tmp/ab12/no_face.png: use --no-crop, or --paste_back"
    assert app.page_wording(text, ["/srv/tmp/ab12/no_face.png", None], app.form_options()) == \
        'no face found in source image no_face.png: use "Crop the face" off, or "Paste back" on'


# --------------------------------------------------------------------------------------------- uploads
def test_uploads_are_checked_by_size_and_content(tmp_path, shared_data):
    limit = 20 * 2 ** 20
    noise = tmp_path / "holiday.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 10 * 2 ** 20, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"^holiday\.mp4 is not a video") as error:
        app.check_upload(str(noise), "video", limit)
    assert str(tmp_path) not in str(error.value) and "\n" not in str(error.value)  # one line, no server paths
    with pytest.raises(InputError, match=r"^holiday\.mp4 is 10\.0 MB; the limit is 5 MB"):
        app.check_upload(str(noise), "video", 5 * 2 ** 20)
    text = tmp_path / "me.png"
    text.write_text("not a picture")
    with pytest.raises(InputError, match=r"^me\.png is not an image"):
        app.check_upload(str(text), "image", limit)
    with pytest.raises(InputError, match=r"^corrupt\.mp4 cannot be used: video corrupt\.mp4 is truncated"):
        app.check_upload(str(shared_data / "corrupt.mp4"), "video", limit)
    assert app.check_upload(str(PORTRAIT), "image", limit) == str(PORTRAIT)
    assert app.check_upload(str(CLIP), "video", limit) == str(CLIP)
    assert app.check_upload(None, "video", limit) is None


def test_work_area_sweeps_old_runs_and_is_removed(tmp_path):
    work = app.WorkArea(keep_seconds=60, parent=str(tmp_path))
    old = work.new_run()
    (old / "result.mp4").write_bytes(b"x")
    past = time.time() - 120
    os.utime(old, (past, past))
    recent = work.new_run()
    assert not old.exists() and recent.exists() and recent.parent == work.runs
    work.close()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ the demo's code path
def test_animate_is_the_demo_run_with_audio_and_depth(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    calls = []
    result, depth = app.animate(str(PORTRAIT), str(CLIP), None, _form(max_frames=6), run_dir,
                                on_frame=lambda done, total: calls.append((done, total)))
    assert calls == [(n, 6) for n in range(1, 7)]
    info = probe(result)
    assert info["frames"] == 6 and info["fps"] == 25 and info["audio_codec"] == "aac"
    assert probe(depth)["frames"] == 6
    assert sorted(p.name for p in run_dir.iterdir()) == ["depth.mp4", "result.mp4"]
    demo_out = tmp_path / "demo.mp4"
    assert cli.main(["--source_image", str(PORTRAIT), "--driving_video", str(CLIP), "--max_frames", "6",
                     "--result_video", str(demo_out), "--quiet"]) == 0
    assert np.array_equal(_frames(result), _frames(demo_out))


def test_two_requests_at_once_keep_their_sources(tmp_path, shared_data):
    portraits = [PORTRAIT, shared_data / "source_astronaut_256.png"]

    def request(index: int, folder: str):
        run_dir = tmp_path / folder / str(index)
        run_dir.mkdir(parents=True)
        return app.animate(str(portraits[index]), str(CLIP), None, _form(max_frames=4), run_dir)[0]

    alone = [request(i, "alone") for i in range(2)]
    together = [None, None]
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, request(i, "together")))
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for i in range(2):
        assert np.array_equal(_frames(together[i]), _frames(alone[i]))
    assert np.abs(_frames(alone[0]) - _frames(alone[1])).mean() > 5


class _NoFaces:
    def detect(self, image, landmarks=False):
        return []


def test_no_face_with_crop_is_a_clear_error_and_without_crop_animates(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(NoFaceError):
        app.animate(str(shared_data / "no_face.png"), str(CLIP), None, _form(crop=True, max_frames=2), run_dir,
                    detector_factory=_NoFaces)
    assert list(run_dir.iterdir()) == []
    result, _ = app.animate(str(shared_data / "no_face.png"), str(CLIP), None, _form(max_frames=2), run_dir)
    assert probe(result)["frames"] == 2


def test_live_session_anchors_at_its_first_frame_and_reanchors(shared_data):
    from dagan.io.images import load_image, resize_image

    session = app.LiveSession.start(str(PORTRAIT), None, _form())
    frames = [frame for _, frame in zip(range(8), VideoReader(CLIP))]
    outputs = [session.animate(frame).astype(np.int16) for frame in frames]
    side = outputs[0].shape[0]
    assert outputs[0].shape == (side, side, 3) and side >= 64
    source = resize_image(load_image(PORTRAIT), side).astype(np.int16)
    assert np.abs(outputs[0] - source).mean() < 2  # zero motion: the portrait itself
    assert np.abs(outputs[-1] - source).mean() > 5  # the driving head moved
    session.reanchor()
    assert np.abs(session.animate(frames[-1]).astype(np.int16) - source).mean() < 2
    assert session.status().startswith("Live: 9 frames animated")


class _WebcamFace:
    """A detector that finds the face of the middle of a 256 px portrait, and in a 240x320 webcam frame the
    face whose crop (margin 1.8) is the 100 px square at x 200, y 40."""

    def detect(self, image, landmarks=False):
        from dagan.faces import Face

        (cx, cy), half = ((128.0, 128.0), 50.0) if image.shape[:2] == (256, 256) else ((250.0, 90.0), 50.0 / 1.8)
        return [Face(np.array([cx - half, cy - half, cx + half, cy + half]))]


def test_live_session_crops_the_face_of_each_webcam_frame(shared_data):
    from dagan.io.images import resize_image

    face = resize_image(next(iter(VideoReader(CLIP))), 100)
    webcam = np.full((240, 320, 3), 128, np.uint8)
    webcam[40:140, 200:300] = face
    session = app.LiveSession.start(str(PORTRAIT), None, _form(crop=True, guide="off"), detector_factory=_WebcamFace)
    prepared = session.prepare(webcam).astype(np.int16)
    side = prepared.shape[0]
    assert np.abs(prepared - resize_image(face, side)).mean() < 8  # the face, filling the frame
    assert np.abs(resize_image(webcam, side).astype(np.int16) - resize_image(face, side)).mean() > 30
    assert session.animate(webcam).shape[2] == 3
    # a first webcam frame without a face is a clear error
    session = app.LiveSession.start(str(PORTRAIT), None, _form(crop=True, guide="off"), detector_factory=_WebcamFace)
    session.prepare.detector = _NoFaces()
    with pytest.raises(NoFaceError):
        session.animate(webcam)


# ------------------------------------------------------------------------------------ the real page
def _browser_paths():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    try:
        import gradio  # noqa: F401
    except ImportError:
        return None, "gradio is not installed (pip install -e '.[app]')"
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None, "no headless Chromium: apt-get install -y chromium chromium-driver"
    return (browser, driver), ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m dagan.app`` on a free port, in an empty working folder, with its own TMPDIR and HOME; on
    teardown (SIGTERM) nothing may be left in any of them."""
    if not DATA.exists():
        pytest.skip(f"{DATA} not present (shared test data)")
    paths, reason = _browser_paths()
    if paths is None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("app")
    cwd, tmp, home = base / "cwd", base / "tmp", base / "home"
    for folder in (cwd, tmp, home):
        folder.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dagan.app", "--port", str(port), "--max-upload-mb", "20"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 180
    while True:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("dagan app: http://127.0.0.1:"):
            break
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the app did not start:\n" + "".join(lines))
    log = []
    reader = threading.Thread(target=lambda: log.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    yield {"url": f"http://127.0.0.1:{port}/", "paths": paths, "log": log}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "".join(lines + log)
    for folder in (cwd, tmp, home):
        # `import torch._dynamo` (via `import dagan`) makes an empty $TMPDIR/torchinductor_<user>: torch's, not ours
        left = [p for p in folder.iterdir() if not (p.name.startswith("torchinductor_") and _no_files(p))]
        assert left == [], f"the app left files in {folder}: {left}"


def _no_files(folder: Path) -> bool:
    return not any(p.is_file() for p in folder.rglob("*"))


@pytest.fixture
def browser(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = server["paths"][0]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1300",
                # no internet: any host but the app's fails to resolve, so the page must work offline
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                # a synthetic camera (moving test pattern) that needs no permission prompt
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(server["paths"][1]), options=options)
    driver.downloads = downloads
    try:
        driver.get(server["url"])
        _wait(driver, lambda: driver.find_elements("id", "animate"), 60, "the page never loaded")
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float, what: str):
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:  # the page re-rendered the element: look again
            value = None
        if value:
            return value
        time.sleep(0.25)
    driver.save_screenshot(str(driver.downloads.parent / "timeout.png"))
    pytest.fail(f"{what} (screenshot in {driver.downloads.parent})")


def _status(driver) -> str:
    return driver.find_element("id", "status").text.strip()


def _upload(driver, elem_id: str, path: Path) -> None:
    driver.find_element("css selector", f"#{elem_id} input[type=file]").send_keys(str(path))


def _set_number(driver, label: str, value: int) -> None:
    field = driver.find_element("xpath", f"//label[contains(., '{label}')]//input | "
                                         f"//*[contains(text(), '{label}')]/ancestor::label//input")
    field.clear()
    field.send_keys(str(value))
    field.send_keys("\t")


@pytest.mark.slow
def test_browser_animates_uploads_and_downloads_the_result(browser, server, tmp_path):
    frames = 25
    _upload(browser, "source-upload", PORTRAIT)
    _upload(browser, "driving-upload", CLIP)
    _wait(browser, lambda: browser.find_elements("css selector", "#driving-preview video"), 60,
          "the driving clip was not previewed")
    _set_number(browser, "At most N frames", frames)
    browser.find_element("id", "animate").click()
    _wait(browser, lambda: any(t in browser.find_element("tag name", "body").text
                               for t in ("loading the model", f"/{frames} frames")), 120, "no progress bar")
    download = _wait(browser, lambda: [b for b in browser.find_elements("id", "download-result") if b.is_displayed()],
                     600, "no result")[0]
    assert _status(browser).startswith("Done in"), _status(browser)
    assert browser.find_elements("css selector", "#depth-video video")
    screenshot = os.environ.get("DAGAN_APP_SCREENSHOT")
    if screenshot:  # the README's picture: DAGAN_APP_SCREENSHOT=docs/app.png pytest -k downloads
        height = browser.execute_script("return Math.max(...[document.body, document.documentElement, "
                                        "document.querySelector('gradio-app')].map(e => e ? e.scrollHeight : 0))")
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 1280, "height": height + 40, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(1)
        browser.save_screenshot(screenshot)
    download.click()
    result = _wait(browser, lambda: [p for p in browser.downloads.iterdir() if p.suffix == ".mp4"], 60,
                   "the download did not arrive")[0]
    info = probe(result)
    assert info["frames"] == frames and info["fps"] == 25 and info["audio_codec"] == "aac"
    side = AnimateOptions().size  # the demo's default output size
    assert _frames(result).shape == (frames, side, side, 3)
    requested = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.add(message["params"]["request"]["url"])
    outside = [u for u in requested if not u.startswith((server["url"], "data:", "blob:"))]
    assert outside == [], f"the page reached outside the app: {outside}"


@pytest.mark.slow
def test_browser_explains_bad_uploads(browser, tmp_path):
    noise = tmp_path / "holiday.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 10 * 2 ** 20, dtype=np.uint8).tobytes())
    archive = noise.with_suffix(".zip")
    shutil.copy(noise, archive)
    _upload(browser, "driving-upload", archive)  # refused by the page before it is sent (file types)
    _wait(browser, lambda: any("Invalid file type: holiday.zip" in e.text
                               for e in browser.find_elements("css selector", "[data-testid=toast-text]")),
          60, "no message for a .zip")
    _upload(browser, "driving-upload", noise)  # sent, then checked by content
    _wait(browser, lambda: _status(browser) == "Error: holiday.mp4 is not a video (ffmpeg finds no video stream "
          "in it)", 60, "no message for a non-video")
    text = tmp_path / "me.png"
    text.write_text("not a picture")
    _upload(browser, "source-upload", text)
    _wait(browser, lambda: "me.png is not an image" in _status(browser), 60, "no message for a non-image")
    browser.find_element("id", "animate").click()
    _wait(browser, lambda: "is not" in _status(browser) and "progress" not in _status(browser), 60,
          "no message after pressing Animate")
    assert "Traceback" not in browser.page_source
    assert not [b for b in browser.find_elements("id", "download-result") if b.is_displayed()]


@pytest.mark.slow
def test_browser_rejects_uploads_over_the_limit(browser, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (21 * 2 ** 20))
    _upload(browser, "driving-upload", big)
    _wait(browser, lambda: any('exceed the maximum allowed size of 20.0 Mb: "big.mp4"' in e.text
                               for e in browser.find_elements("css selector", "[data-testid=toast-text]")),
          60, "no size-limit message")
    assert "big.mp4" not in browser.find_element("id", "driving-upload").text


@pytest.mark.slow
def test_browser_face_less_portrait_with_crop_says_so(browser, server):
    _upload(browser, "source-upload", DATA / "no_face.png")
    _wait(browser, lambda: browser.find_elements("css selector", "#source-preview img"), 60, "no preview")
    browser.find_element("xpath", "//label[contains(., 'Crop the face')]//input").click()
    _set_number(browser, "At most N frames", 2)
    browser.find_element("id", "animate").click()
    _wait(browser, lambda: _status(browser).startswith("Error:"), 120, "no message for a face-less portrait")
    message = _status(browser)
    assert "\n" not in message and "Traceback" not in browser.page_source
    if _offline_face_backend():
        assert message.startswith('Error: no face found in source image no_face.png: use "Crop the face" off'), \
            message
    else:  # without the offline backend, face-alignment's missing weights are named instead
        assert "weights" in message, message


def _offline_face_backend() -> bool:
    from dagan import faces

    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return hasattr(faces, "load_face_backend")


@pytest.mark.slow
def test_browser_webcam_animates_live(browser):
    browser.find_element("xpath", "//*[@id='webcam-panel']//*[contains(text(), 'Live webcam')]").click()

    def click(label: str):
        for button in browser.find_elements("css selector", "#webcam button"):
            if button.is_displayed() and button.text.strip() == label:
                button.click()
                return True
        return False

    _wait(browser, lambda: click("Click to Access Webcam"), 30, "no webcam panel")
    _wait(browser, lambda: click("Record"), 30, "the camera did not start")

    def animated() -> int:
        text = browser.find_element("id", "live-status").text
        return int(text.split()[1]) if text.startswith("Live:") else 0

    _wait(browser, lambda: animated() >= 5, 180, "no live frames")
    _wait(browser, lambda: int(browser.find_element("css selector", "#live-result img")
                               .get_attribute("naturalWidth") or 0) >= 64, 30, "no live result shown")
    browser.find_element("id", "reanchor").click()
    count = animated()
    _wait(browser, lambda: animated() >= count + 3, 120, "the stream stopped after re-anchoring")
    assert "Error" not in browser.find_element("id", "live-status").text
