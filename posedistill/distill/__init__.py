"""Distillation below the task: the term table, the frozen teacher, the teacher-output cache, the discriminator."""
