"""TBAR, the method: fit a trigger vector on a small unlearning set, negate it, choose the scale, verify.

| module | job |
|---|---|
| ``unlearner`` | :class:`BackdoorUnlearner`: TBAR end to end on a model; orchestrates the collaborators below |
| ``config`` | :class:`TBARConfig`: how the trigger vector is fitted, and which variant is negated |
| ``inputs`` | the model and its processor checked, and images read through the processor (:class:`ImageReader`) |
| ``unlearning_set`` | the unlearning set: triggered images labelled with the target, drawn or found |
| ``objectives`` | :class:`FitObjective`, the declared interface of an objective, and the cross-entropy one |
| ``contrastive``, ``captions`` | the contrastive objective on image-caption data, and the captions |
| ``fitter`` | :class:`VectorFitter`: the fine-tunings that give the trigger, target-class and repair vectors |
| ``measuring`` | scale selection and detection, as functions over a zero-shot classifier and an image set |
| ``stages`` | an unlearning run's argument checks, detection settings and stage stopwatch |
| ``variants`` | the registry of trigger-vector variants (which vector is negated) |
| ``multi`` | several backdoors at once: per-vector scales chosen jointly |
| ``rebound`` | the rebound check: does a sanitized model regain its backdoor after a little fine-tuning? |

The package's ``__init__`` imports nothing: ``BackdoorUnlearner`` is imported from :mod:`hf_tbar` (or from
``hf_tbar.tbar.unlearner``), so that the lower rooms (:mod:`hf_tbar.results`, :mod:`hf_tbar.reporting`) can
import :mod:`.config` without loading the unlearner.
"""
