"""Export and inference: a trained member → `model.onnx` → prediction sets (design.md, "export / infer").

The verbs, in flow order:
- `exporter.export_checked(model, info, path, inputs)` — ONNX export, then the parity check
  against PyTorch; the file appears only if the check passes.
- `runtime.OnnxRunner(path, provider)` — onnxruntime on CUDA or CPU (`TorchRunner`: the same
  interface over eager PyTorch, for parity and benchmarks).
- `infer.embed(runner, ...)` — batched, prefetched inference with flip TTA folded back.
- `centres.identity_centres` / `cosine_scores` / `nearest_image_scores` — the embedding view.
- `member.export_member(model_dir)` — all of the above for one trained member; what
  `scripts/export.py` calls. `layout`: what a member directory holds and whether its export is fresh.
- `check.map5_parity(model_dir)` — local MAP@5 from ONNX and from eager PyTorch, side by side.
- `oof.export_oof_member(parent, ...)` — an out-of-fold member (`fold: all`): every fold exported,
  then `preds/<view>/oof/` (their val sets stacked) and `preds/<view>/test/` (their mean);
  `export_member` calls it for such a directory, handing itself over to export each fold.

Importing this package does not import torch; the modules that need it import it themselves.
"""
