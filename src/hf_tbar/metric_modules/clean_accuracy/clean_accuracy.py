"""Clean top-1 accuracy as a local `evaluate` metric: ``evaluate.load("<this folder>")`` works offline."""

import datasets
import evaluate

_DESCRIPTION = "Top-1 accuracy of predictions on clean (untriggered) images."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
Returns:
    clean_accuracy (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CleanAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        from hf_tbar.metrics import clean_accuracy

        return {"clean_accuracy": clean_accuracy(predictions, references)}
