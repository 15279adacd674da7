"""Data path: annotation loaders (COCO-format, MPII), crop geometry and the top-down dataset."""
from posedistill.data.coco import AnnotationError, CocoKeypoints, PersonInstance, load_coco_instances
from posedistill.data.mpii import load_mpii, load_mpii_instances
from posedistill.data.topdown import ImageReadError, TopDownDataset, load_image
from posedistill.data.transforms import (box_to_center_scale, crop_to_image, flip_keypoints, get_affine,
                                         invert_affine, warp_crop)

__all__ = ["AnnotationError", "CocoKeypoints", "ImageReadError", "PersonInstance", "TopDownDataset",
           "box_to_center_scale", "crop_to_image", "flip_keypoints", "get_affine", "invert_affine",
           "load_coco_instances", "load_image", "load_mpii", "load_mpii_instances", "warp_crop"]
