"""Metrics: OKS AP/AR (COCO, CrowdPose, OCHuman, custom COCO-format files) and MPII PCKh."""
from posedistill.evaluation.coco_eval import (COCO_METRICS, CROWDPOSE_METRICS, coco_results,  # noqa: F401
                                              evaluate_coco, oks_iou, oks_nms, rescore, soft_oks_nms,
                                              write_coco_results)
from posedistill.evaluation.pckh import GROUPS, evaluate_pckh, format_pckh_table, pckh  # noqa: F401
