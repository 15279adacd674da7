from posedistill.losses.heatmap import JointsMSELoss  # noqa: F401
from posedistill.losses.simcc import SimCCKLLoss  # noqa: F401
from posedistill.losses.distill import (AlignedFeatureLoss, LogitDistillLoss, MultiAngleLoss,  # noqa: F401
                                        PairwiseSimilarityLoss, PoseDistillLoss, SimCCLogitDistillLoss,
                                        linear_decay, simcc_argmax_pose, simcc_soft_argmax)
