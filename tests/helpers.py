"""What several test files share: the command-line overrides that point a recipe at a tiny synthetic
train / val pair (from `commands.demo.generate_data`) and make training take seconds."""
from __future__ import annotations

from posedistill.data.synthetic import generate_dataset


def data_overrides(splits: dict) -> list[str]:
    """data.* keys for the {"train": (ann, images), "val": (ann, images)} pair, ground-truth val boxes."""
    (train_ann, train_img), (val_ann, val_img) = splits["train"], splits["val"]
    return [f"data.train_ann={train_ann}", f"data.train_images={train_img}", f"data.val_ann={val_ann}",
            f"data.val_images={val_img}", "data.val_boxes=gt"]


def tiny_run(splits: dict, out_dir, *extra, model: str = "elpn_v1", epochs: int = 1, iters: int = 2,
             batch: int = 4) -> list[str]:
    """A seconds-long run of `model` at 64x64: `epochs` x `iters` iterations, no evaluation, no workers."""
    return [*data_overrides(splits), "data.input_size=[64, 64]", f"model.name={model}", f"optim.epochs={epochs}",
            "optim.milestones=[]", f"train.max_iters_per_epoch={iters}", f"train.batch_size={batch}",
            "train.workers=0", "train.eval_interval=0", "train.progress=false", "eval.flip_test=false",
            f"train.out_dir={out_dir}", *extra]


def tiny_bottomup_splits(root) -> dict:
    """{split: (annotation file, image dir)} of 4 training and 2 validation synthetic 320x240 images
    (easy scenes, no segmentation): the bottom-up tests' data."""
    out = {}
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        res = generate_dataset(root / split, n, seed=seed, size=(320, 240), difficulty="easy", split=split,
                               segmentation=False)
        out[split] = (str(res.ann_file), str(res.image_dir))
    return out
