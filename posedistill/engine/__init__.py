"""Training and evaluation for any task: loop, evaluate, run log, build (config -> objects), checkpoints, DDP."""
