"""`posedistill serve` over real HTTP: a tiny trained checkpoint behind the real command (a subprocess
on a free port), good and bad requests, concurrent requests sharing a batch, and the page at / in
headless Chromium (Debian's /usr/bin/chromium; nothing is downloaded)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import uvicorn

from posedistill.cli import main as cli_main
from posedistill.commands.demo import generate_data
from posedistill.engine.config import load_config
from posedistill.engine.loop import train
from posedistill.inference.server import create_app
from posedistill.keypoints import COCO

TESTS = Path(__file__).parent
IMAGE = TESTS / "data" / "coco" / "000000196141.jpg"
JPEG = IMAGE.read_bytes()
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = TESTS / "artifacts" / "serve_page.png"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A model card-carrying last.pth of ELPN-V1 trained for one iteration on 4 synthetic images."""
    root = tmp_path_factory.mktemp("serve_model")
    (train_ann, train_img), (val_ann, val_img) = generate_data(root, n_train=4, n_val=1).values()
    train(load_config("configs/demo_student.yaml", [
        f"data.train_ann={train_ann}", f"data.train_images={train_img}", f"data.val_ann={val_ann}",
        f"data.val_images={val_img}", "optim.epochs=1", "optim.milestones=[]", "train.max_iters_per_epoch=1",
        "data.max_train_instances=4", "train.batch_size=4", "train.workers=0", "train.eval_interval=0",
        "train.progress=false", f"train.out_dir={root / 'run'}"]))
    return root / "run" / "last.pth"


def _wait_for_url(proc: subprocess.Popen, stdout: Path, stderr: Path, timeout: float = 90) -> str:
    """The URL the command prints, once /health answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`posedistill serve` exited with {proc.returncode}:\n{stderr.read_text()}")
        found = re.search(r"http://\S+/", stdout.read_text())
        if found:
            try:
                with urllib.request.urlopen(found.group(0) + "health", timeout=5):
                    return found.group(0)
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"`posedistill serve` did not come up in {timeout} s:\n{stderr.read_text()}")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory) -> str:
    """Base URL of `posedistill serve CKPT` run as a command on a free port, with small limits (1 MB,
    1 Mpixel) and a 100 ms batch window."""
    logs = tmp_path_factory.mktemp("serve_logs")
    stdout, stderr = logs / "stdout.txt", logs / "stderr.txt"
    cmd = [sys.executable, "-m", "posedistill.cli", "serve", str(checkpoint), "--port", "0", "--max-upload-mb", "1",
           "--max-pixels", "1000000", "--batch-window-ms", "100", "--threads", "1"]
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        yield _wait_for_url(proc, stdout, stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _request(url: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, dict]:
    """(status, reply) of a GET (no body) or POST, error replies included; the reply is the JSON
    sent, or {"text": ...} for anything else."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            status, text = reply.status, reply.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"text": text.decode(errors="replace")}


def _multipart(data: bytes, filename: str = "photo.jpg", part_type: str = "image/jpeg") -> tuple[bytes, str]:
    """(body, Content-Type) of a form upload with the one field `file`, as a browser sends it."""
    boundary = "posedistill-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {part_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


def test_good_image_gives_people_in_the_picture(server):
    status, reply = _request(server + "predict", *_multipart(JPEG))
    assert status == 200, reply
    h, w = cv2.imread(str(IMAGE)).shape[:2]
    assert (reply["width"], reply["height"]) == (w, h)
    assert reply["joints"] == list(COCO.joints) and len(reply["skeleton"]) == len(COCO.skeleton)
    assert len(reply["people"]) == 1                       # --boxes whole: the whole picture is one person
    person = reply["people"][0]
    kps = np.array(person["keypoints"])
    assert kps.shape == (17, 3) and np.isfinite(kps).all()
    assert person["box"] == [0, 0, w, h] and reply["time_ms"] > 0
    # joints lie in the crop the model saw (they may leave the picture: the whole-image box is widened
    # to the input's aspect and padded 1.25, as in evaluation)
    in_w, in_h = load_config("configs/demo_student.yaml").data.input_size
    crop_w, crop_h = 1.25 * max(w, h * in_w / in_h), 1.25 * max(h, w * in_h / in_w)
    assert (abs(kps[:, 0] - w / 2) <= crop_w / 2).all() and (abs(kps[:, 1] - h / 2) <= crop_h / 2).all(), kps
    # the same bytes as a raw body give the same answer
    status, raw = _request(server + "predict", JPEG, "image/jpeg")
    assert status == 200 and raw["people"] == reply["people"]



@pytest.mark.parametrize("body, content_type, status, says", [
    (b"not an image at all", "image/jpeg", 400, "is not a decodable image (JPEG/PNG"),
    (JPEG[:300], "image/jpeg", 400, "is not a decodable image"),                    # header only
    (_multipart(b"hello")[0], _multipart(b"")[1], 400, "upload photo.jpg is not a decodable image"),
    (b"", "image/png", 400, "empty request body"),
    (b"\0" * (1 << 20 | 1), "application/octet-stream", 413, "larger than the 1 MB limit"),
    (_png(1200, 1000), "image/png", 413, "1200x1000 = 1200000 pixels"),
    (_png(1, 1)[:16] + (100_000).to_bytes(4, "big") * 2 + _png(1, 1)[24:], "image/png", 413, "100000x100000"),
    (b"a picture, honest", "text/plain", 415, "image/jpeg, image/png"),
    (b'{"image": "..."}', "application/json", 415, "image/jpeg, image/png"),
    (*_multipart(JPEG, "notes.txt", "text/plain"), 415, "uploaded file is text/plain"),
], ids=["garbage", "truncated", "multipart-garbage", "empty", "too-many-bytes", "too-many-pixels",
        "forged-header", "text", "json", "multipart-text"])
def test_bad_input_is_a_4xx_naming_the_problem(server, body, content_type, status, says):
    got, reply = _request(server + "predict", body, content_type)
    assert (got, says in reply["detail"]) == (status, True), reply


def test_concurrent_requests_share_a_batch(server):
    _, before = _request(server + "health")
    start = threading.Barrier(8)
    replies: list = [None] * 8

    def client(i):
        start.wait()
        replies[i] = _request(server + "predict", JPEG, "image/jpeg")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [r[0] for r in replies] == [200] * 8
    assert all(r[1]["people"] == replies[0][1]["people"] for r in replies)
    status, after = _request(server + "health")
    assert status == 200 and after["status"] == "ok" and "last.pth" in after["model"]
    assert after["images"] - before["images"] == 8
    assert after["batches"] - before["batches"] < 8 and after["largest_batch"] > 1, after


def test_one_failing_image_does_not_fail_its_batch_mates():
    """The pipeline is run again image by image when a batch fails: only the bad request errs (500,
    a server bug, not bad input), the others get their people."""
    class Pipeline:
        def many(self, images, names):
            if any(im.shape[1] == 3 for im in images):
                raise RuntimeError("boom")
            return [[] for _ in images]

    app = create_app(Pipeline(), COCO, batch_window_ms=300)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/predict"
    results = {}

    def client(width):
        results[width] = _request(url, _png(width, 2), "image/png")[0]

    clients = [threading.Thread(target=client, args=(w,)) for w in (2, 3, 4)]
    try:
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=30)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert results == {2: 200, 3: 500, 4: 200}
    assert app.state.batcher.largest_batch == 3


def test_serve_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["serve", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posedistill serve: error: ") and "missing.pth" in err and err.count("\n") == 1


def test_page_draws_the_skeletons_in_chromium(server):
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; CI installs Debian's chromium package")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium) to drive the page with")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(server)
            page.set_input_files("#file", str(IMAGE))
            page.wait_for_selector("#status[data-state=done]", timeout=60_000)
            assert re.match(r"1 person in \d+x\d+ pixels", page.inner_text("#status"))
            # draw every joint (the barely trained model is unsure of all of them), then count the
            # pixels in the exact left / right / other colours of the skeleton
            page.eval_on_selector("#thr", "e => { e.value = 0; e.dispatchEvent(new Event('input')); }")
            drawn = page.evaluate("""() => {
                const c = document.getElementById('result');
                const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const colours = new Set(['255,140,0', '0,150,255', '60,210,60']);
                let n = 0;
                for (let i = 0; i < px.length; i += 4) n += colours.has(px[i] + ',' + px[i + 1] + ',' + px[i + 2]);
                return { n, width: c.width, height: c.height };
            }""")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    h, w = cv2.imread(str(IMAGE)).shape[:2]
    assert (drawn["width"], drawn["height"]) == (w, h)
    assert drawn["n"] > 100, drawn
