"""Tasks: what one training step computes. The loop in `engine/loop.py` knows only `Task`."""
from posedistill.tasks.base import OptimGroup, Task
from posedistill.tasks.bottomup import BottomUpTask
from posedistill.tasks.distillation import DistillationTask
from posedistill.tasks.refine import RefinerTask
from posedistill.tasks.supervised import SupervisedTask, supervised_loss

__all__ = ["BottomUpTask", "DistillationTask", "OptimGroup", "RefinerTask", "SupervisedTask", "Task", "supervised_loss"]
