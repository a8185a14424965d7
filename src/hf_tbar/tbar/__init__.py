"""TBAR, the method: fit a trigger vector on a small unlearning set, negate it, choose the scale, verify.

| module | job |
|---|---|
| ``unlearner`` | :class:`BackdoorUnlearner`: TBAR end to end on a model (composes the mixins below) |
| ``config`` | :class:`TBARConfig`: how the trigger vector is fitted, and which variant is negated |
| ``unlearning_set`` | the unlearning set: triggered images labelled with the target, drawn or found |
| ``vector_fitting`` | the fine-tunings that give the trigger, target-class and repair vectors (cross-entropy) |
| ``caption_fitting``, ``captions`` | the same fine-tunings on image-caption data (contrastive loss), and the captions |
| ``measuring`` | evaluating a scale, selecting the scale, detecting: the read-only half of the unlearner |
| ``variants`` | the registry of trigger-vector variants (which vector is negated) |
| ``multi`` | several backdoors at once: per-vector scales chosen jointly |
| ``rebound`` | the rebound check: does a sanitized model regain its backdoor after a little fine-tuning? |

The package's ``__init__`` imports nothing: ``BackdoorUnlearner`` is imported from :mod:`hf_tbar` (or from
``hf_tbar.tbar.unlearner``), so that the lower rooms (:mod:`hf_tbar.results`, :mod:`hf_tbar.reporting`) can
import :mod:`.config` without loading the unlearner.
"""
