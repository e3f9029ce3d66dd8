"""Serving: use a trained model. One way through: checkpoint, then preprocess, then the OOD guard and
Grad-CAM, then predict; the lookup ("is this image in the training set?") beside them; the demo
(fracbench.app.demo) on top.

- ``checkpoint``: load and write checkpoints with everything needed to rebuild and use the model;
- ``preprocess``: pixels to the model's input, exactly as training sees them;
- ``ood``: the out-of-distribution guard (a feature-space reference in the checkpoint's sidecar);
  ``ood_eval``: how well it flags non-radiographs;
- ``cam``: Grad-CAM heat maps;
- ``predict``: files, folders or arrays to P(fracture), decisions and warnings; the default checkpoint;
- ``lookup``: an upload matched against a dataset's copy index (fracbench.copies).

Modules import only those before them in this list (lookup and ood_eval aside, which read the others).
"""
