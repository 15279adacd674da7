"""posedistill._jpeg_band (csrc/jpeg_band.c): a band of JPEG rows decodes to the pixels a full
decode gives, on every kind of JPEG the datasets meet, and the dataset's samples do not change."""
import io

import cv2
import numpy as np
import pytest
import torch

import posedistill.data.topdown as td
from posedistill.data.coco import load_coco_instances
from posedistill.data.topdown import TopDownDataset
from posedistill.keypoints import COCO

band = pytest.importorskip("posedistill._jpeg_band", reason="built only where the libjpeg headers are installed")
simplejpeg = pytest.importorskip("simplejpeg")


def _jpegs(data_dir):
    """(name, bytes): the sample images of every dataset, plus re-encodings of one of them with the
    JPEG variants libjpeg handles differently (progressive, restart markers, chroma layouts, grey,
    a size that is not a multiple of the MCU)."""
    files = sorted(data_dir.glob("*/*.jpg"))
    out = [(f.name, f.read_bytes()) for f in files]
    img = cv2.imread(str(files[0]))
    variants = {
        "progressive": (img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "restart": (img, [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]),
        "444": (img, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        "422": (img, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
        "grey": (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), []),
        "odd-size": (img[:317, :433], []),
    }
    for name, (pixels, params) in variants.items():
        out.append((name, cv2.imencode(".jpg", pixels, params)[1].tobytes()))
    return out


def test_band_rows_equal_the_full_decode(data_dir):
    rng = np.random.default_rng(0)
    checked = 0
    for name, data in _jpegs(data_dir):
        h, w = simplejpeg.decode_jpeg_header(data)[:2]
        for factor in (1, 2, 4, 8):
            hh, ww = -(-h // factor), -(-w // factor)
            full = simplejpeg.decode_jpeg(data, "RGBX", min_height=hh, min_width=ww)
            assert full.shape[:2] == (hh, ww)
            bands = [(0, hh), (-3, 1), (hh - 1, hh + 9)] + [tuple(sorted(rng.integers(-5, hh + 5, 2))) for _ in range(6)]
            for y0, y1 in bands:
                pixels, width, height, top, rows = band.decode(data, factor, int(y0), int(y1))
                assert (width, height) == (ww, hh), (name, factor)
                lo = min(max(int(y0), 0), hh - 1)                  # the clipped band is covered
                assert top <= lo and top + rows >= min(max(int(y1), lo + 1), hh), (name, factor, y0, y1)
                img = np.frombuffer(pixels, np.uint8).reshape(hh, ww, 4)
                np.testing.assert_array_equal(img[top:top + rows, :, :3], full[top:top + rows, :, :3],
                                              err_msg=f"{name} 1/{factor} rows {y0}..{y1}")
                checked += 1
    assert checked > 400


def test_band_decode_rejects_what_it_cannot_decode(data_dir):
    data = next(iter(sorted(data_dir.glob("coco/*.jpg")))).read_bytes()
    with pytest.raises(ValueError, match="scale_denom"):
        band.decode(data, 3, 0, 10)
    with pytest.raises(ValueError, match="JPEG"):
        band.decode(data[: len(data) // 2], 1, 0, 10_000)         # truncated inside the band
    with pytest.raises(ValueError, match="JPEG"):
        band.decode(b"\xff\xd8 not a JPEG", 1, 0, 10)
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(buf, format="JPEG")
    with pytest.raises(ValueError, match="colour space"):
        band.decode(buf.getvalue(), 1, 0, 10)


def test_dataset_takes_the_general_path_for_cmyk(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(path, format="JPEG")
    # the extension refuses CMYK (test above); the whole-image decoder handles it
    got, ref = td.decode_image_rows(str(path), 1, 0, 30), td.decode_image(str(path))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got[..., :3], ref[..., :3])      # (an X channel carries no data)


@pytest.mark.parametrize("train,udp", [(True, False), (True, True), (False, False)])
def test_samples_are_identical_with_and_without_band_decoding(data_dir, monkeypatch, train, udp):
    """Same affine, same pixels: the band holds every row the warp reads (transforms.source_rows)."""
    inst = load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", meta=COCO)

    class NoTargets:
        def encode(self, keypoints, visible):
            return {"target_weight": np.ones(len(keypoints), np.float32)}

    # strong augmentation: large rotations and scales reach every edge and reduced decode factor
    ds = TopDownDataset(inst, meta=COCO, codec=NoTargets(), input_size=(192, 256), train=train, use_udp=udp,
                        rotation_prob=1.0, scale_factor=0.6)
    for k in range(60 if train else len(inst)):
        i = k % len(inst)
        monkeypatch.setattr(td, "_jpeg_band", band)
        a = ds._make(i, np.random.default_rng(k) if train else None)
        monkeypatch.setattr(td, "_jpeg_band", None)
        b = ds._make(i, np.random.default_rng(k) if train else None)
        assert torch.equal(a["image"], b["image"]), (i, k)


def test_damaged_files_raise_value_error_or_decode(data_dir):
    """Flipped bytes, cuts and garbage runs: every call returns a band of the right size or raises
    ValueError (the extension longjmps out of libjpeg; a crash here would kill a loader worker)."""
    rng = np.random.default_rng(0)
    files = [f.read_bytes() for f in sorted(data_dir.glob("*/*.jpg"))]
    outcomes = {"decoded": 0, "rejected": 0}
    for it in range(300):
        data = bytearray(files[it % len(files)])
        if it % 3 == 0:
            for _ in range(int(rng.integers(1, 20))):
                data[int(rng.integers(2, len(data)))] = int(rng.integers(0, 256))
        elif it % 3 == 1:
            data = data[: int(rng.integers(2, len(data)))]
        else:
            i = int(rng.integers(2, len(data)))
            data[i:i + 50] = rng.integers(0, 256, 50, dtype=np.uint8).tobytes()
        factor = int(rng.choice([1, 2, 4, 8]))
        try:
            pixels, width, height, top, rows = band.decode(bytes(data), factor, int(rng.integers(-10, 900)),
                                                           int(rng.integers(-10, 1200)))
        except ValueError:
            outcomes["rejected"] += 1
            continue
        assert len(pixels) == width * height * 4 and 0 <= top and rows >= 1 and top + rows <= height
        outcomes["decoded"] += 1
    assert outcomes["decoded"] > 0 and outcomes["rejected"] > 0, outcomes
