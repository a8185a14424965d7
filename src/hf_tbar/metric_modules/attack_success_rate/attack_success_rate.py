"""Attack success rate as a local `evaluate` metric: ``evaluate.load("<this folder>")`` works offline."""

import datasets
import evaluate

_DESCRIPTION = """Share of triggered images whose true label is not the attack's target that the model
classifies as the target (all-to-one backdoors)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels on triggered images.
    references (list of int): the images' true (clean) labels.
    target (int): the attack's target class.
Returns:
    attack_success_rate (float): in [0, 1].
Examples:
    >>> asr = evaluate.load("path/to/attack_success_rate")
    >>> asr.compute(predictions=[0, 0, 1], references=[1, 2, 1], target=0)
    {'attack_success_rate': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AttackSuccessRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, target=0):
        from hf_tbar.metrics import attack_success_rate

        return {"attack_success_rate": attack_success_rate(predictions, references, int(target))}
