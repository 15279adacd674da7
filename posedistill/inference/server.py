"""The HTTP server of `posedistill serve`: POST an image, get people's keypoints back as JSON.

    POST /predict   the image as a multipart upload (field `file`) or as the raw request body
                    (Content-Type image/jpeg, image/png, image/webp, image/bmp or application/octet-stream)
                    -> {"width", "height", "people": [{"keypoints": [[x, y, score], ...], "box": [x, y, w, h],
                        "score"}], "joints": [names], "skeleton": [[a, b], ...], "time_ms"}
    GET  /health    {"status": "ok", "model", "batches", "images", "largest_batch"}
    GET  /          a page to try it in a browser (static/index.html: pick a picture, see the skeletons)

Bad input is the client's fault and gets a 4xx naming what is wrong, never a 500: an upload over
`max_upload_mb` (413), an image of more than `max_pixels` (413, found from the file header before
anything is decoded, so a small file that would decode to gigabytes is refused cheaply), bytes that
are not a JPEG / PNG / WebP / BMP (400), another content type (415), an empty body (400).

Requests that arrive together share a batch: the model runs faster on a few crops at once than on
each alone, and one worker owning the model means requests never run it concurrently (`Batcher`).
"""
from __future__ import annotations

import asyncio
import math
import struct
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Callable

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from posedistill.data.topdown import jpeg_declared_size
from posedistill.keypoints import KeypointMeta

# What /predict takes as a raw body (a multipart part may say the same or nothing at all).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
FORMATS = "JPEG/PNG/WebP/BMP"
# Past the upload limit the rest of the body is still read (and dropped) so the client, still
# sending, gets the 413 rather than a reset connection; beyond this much more we stop listening.
DRAIN_LIMIT = 64 * 2**20


class RequestError(Exception):
    """A bad request: answered with `status` and {"detail": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------- image size from the file header

def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first chunk of a WebP (lossy VP8, lossless VP8L or extended VP8X)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of a JPEG, PNG, WebP or BMP; None for anything else
    (which is then not decoded at all: OpenCV only ever sees files whose size was checked)."""
    if data[:3] == b"\xff\xd8\xff":
        size = jpeg_declared_size(data)
        return None if size is None else (size[1], size[0])
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _decode(data: bytes, max_pixels: int, what: str) -> np.ndarray:
    """BGR uint8 image of the uploaded bytes; RequestError for an unreadable or too large one."""
    size = _header_size(data)
    not_an_image = RequestError(400, f"{what} is not a decodable image ({FORMATS})")
    if size is None or min(size) <= 0:
        raise not_an_image
    if size[0] * size[1] > max_pixels:
        raise RequestError(413, f"{what} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels; "
                                f"this server takes at most {max_pixels} pixels (--max-pixels)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise not_an_image
    if image.shape[0] * image.shape[1] > max_pixels:   # the header lied
        raise RequestError(413, f"{what} decodes to {image.shape[1]}x{image.shape[0]} pixels; "
                                f"this server takes at most {max_pixels} pixels (--max-pixels)")
    return image


# ---------------------------------------------------------------- reading the request

async def _read_body(request: Request, max_bytes: int, limit_text: str) -> bytes:
    """The whole request body, or RequestError 413 once it passes `max_bytes` (nothing past the
    limit is kept)."""
    too_large = RequestError(413, f"upload larger than the {limit_text} limit (--max-upload-mb)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes and "100-continue" in request.headers.get("expect", ""):
        raise too_large                  # the client waits for our go-ahead: no need to read anything
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
        elif size > max_bytes + DRAIN_LIMIT:
            break
    if size > max_bytes:
        raise too_large
    return b"".join(chunks)


def _replaying(request: Request, body: bytes) -> Request:
    """A copy of `request` whose body is `body` again (the original stream has been read)."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return Request(request.scope, receive)


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


async def _uploaded_file(request: Request, body: bytes) -> tuple[bytes, str]:
    """(bytes, file name) of the `file` field of a multipart form body."""
    try:
        async with _replaying(request, body).form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise RequestError(400, "multipart upload without a `file` field holding the image")
            part_type = _media_type(upload.content_type)
            if part_type and part_type not in IMAGE_TYPES:
                raise RequestError(415, f"uploaded file is {part_type}; send one of {', '.join(IMAGE_TYPES)}")
            return await upload.read(), upload.filename or ""
    except (MultiPartException, HTTPException) as e:
        raise RequestError(400, f"malformed multipart upload: {getattr(e, 'detail', e)}") from e


async def _read_image_bytes(request: Request, max_bytes: int, limit_text: str) -> tuple[bytes, str]:
    """(image bytes, file name or "") of a /predict request, whichever of the two ways it came."""
    media = _media_type(request.headers.get("content-type"))
    if media != "multipart/form-data" and media not in IMAGE_TYPES:
        raise RequestError(415, f"Content-Type {media or '(none)'} not accepted; send the image as a multipart "
                                f"upload (field `file`) or as a body of type {', '.join(IMAGE_TYPES)}")
    body = await _read_body(request, max_bytes, limit_text)
    if not body:
        raise RequestError(400, "empty request body: send an image")
    data, name = await _uploaded_file(request, body) if media == "multipart/form-data" else (body, "")
    if not data:
        raise RequestError(400, "the uploaded file is empty")
    return data, name


# ---------------------------------------------------------------- batching

class Batcher:
    """One worker task that runs the model for every request, batching those that arrive together.

    `submit` queues an image and waits for its people. The worker takes the first queued request,
    waits up to `window_s` for more (at most `max_batch` in all), runs `run(images, names)` (the
    pipeline's `many`) in a thread so the server keeps accepting requests meanwhile, and answers
    each request. Requests that arrive while a batch runs are queued and form the next one, so
    under load batches fill up without waiting. Counters of the batches are read by /health."""

    def __init__(self, run: Callable[[list, list], list], window_s: float, max_batch: int):
        self.run, self.window_s, self.max_batch = run, window_s, max(1, int(max_batch))
        self.batches = self.images = self.largest_batch = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, image: np.ndarray, name: str = "") -> list[dict]:
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((image, name, done))
        return await done

    async def _next_batch(self) -> list[tuple]:
        """The first queued request and those arriving within `window_s` of it (at most `max_batch`)."""
        loop = asyncio.get_running_loop()
        jobs = [await self._queue.get()]
        deadline = loop.time() + self.window_s
        while len(jobs) < self.max_batch:
            if not self._queue.empty():      # already there, e.g. queued while the last batch ran
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [job for job in jobs if not job[2].done()]   # a client may have gone away meanwhile

    async def _work(self) -> None:
        while True:
            jobs = await self._next_batch()
            if not jobs:
                continue
            self.batches += 1
            self.images += len(jobs)
            self.largest_batch = max(self.largest_batch, len(jobs))
            try:
                results = await asyncio.to_thread(self._run_isolated, [j[0] for j in jobs], [j[1] for j in jobs])
            except Exception as e:   # noqa: BLE001 - handed to the waiting requests, the worker goes on
                results = [e] * len(jobs)
            for (_, _, done), result in zip(jobs, results):
                if done.done():
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)

    def _run_isolated(self, images: list, names: list) -> list:
        """`run` on the batch; if it fails, each image alone, so one bad image fails only its request."""
        try:
            return self.run(images, names)
        except Exception as e:   # noqa: BLE001
            if len(images) == 1:
                return [e]
        out = []
        for image, name in zip(images, names):
            try:
                out.append(self.run([image], [name])[0])
            except Exception as e:   # noqa: BLE001
                out.append(e)
        return out


# ---------------------------------------------------------------- the app

def _number(v, digits: int) -> float:
    """A JSON-safe rounded float (JSON has no NaN / infinity)."""
    v = float(v)
    return round(v, digits) if math.isfinite(v) else 0.0


def _person_json(person: dict) -> dict:
    kps = np.nan_to_num(np.asarray(person["keypoints"], dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return {"keypoints": kps.round(3).tolist(), "box": [_number(v, 2) for v in person["box"][:4]],
            "score": _number(person["score"], 4)}


def _page() -> str:
    return resources.files(__package__).joinpath("static", "index.html").read_text(encoding="utf-8")


def create_app(pipeline, meta: KeypointMeta, *, max_upload_mb: float = 10, max_pixels: int = 40_000_000,
               batch_window_ms: float = 10, max_batch: int = 8, model: str = "") -> FastAPI:
    """The FastAPI app serving `pipeline` (anything with `many(images_bgr, names) -> people per image`,
    e.g. `PosePipeline`) for the keypoint set `meta`. `model` is the name /health reports."""
    batcher = Batcher(pipeline.many, batch_window_ms / 1000.0, max_batch)
    max_bytes, limit_text = int(max_upload_mb * 2**20), f"{max_upload_mb:g} MB"
    page = _page()
    described = {"joints": list(meta.joints), "skeleton": [[int(a), int(b)] for a, b in meta.skeleton]}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="posedistill serve", lifespan=lifespan)
    app.state.batcher = batcher

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        try:
            data, name = await _read_image_bytes(request, max_bytes, limit_text)
            image = await asyncio.to_thread(_decode, data, max_pixels, f"upload {name}".strip())
        except RequestError as e:
            return JSONResponse({"detail": e.message}, status_code=e.status)
        people = await batcher.submit(image, name)
        return {"width": image.shape[1], "height": image.shape[0], "people": [_person_json(p) for p in people],
                **described, "time_ms": round(1000 * (time.perf_counter() - start), 1)}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model, "batches": batcher.batches, "images": batcher.images,
                "largest_batch": batcher.largest_batch}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    return app
