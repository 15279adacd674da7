"""Using a trained model: rebuild it from a checkpoint, find people (box sources), run it (PyTorch or
ONNX Runtime), decode, draw; ONNX export; the HTTP server. Used by `predict`, `export` and `serve`.

Layer 3, beside `engine` (it rebuilds models through `engine.build` and reads checkpoints through
`engine.checkpoint`); only the commands import it.
"""
