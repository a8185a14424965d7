"""Reading the catch-all data source, a dataset id on the Hugging Face Hub (or in its local cache); :mod:`.sources`
registers it as ``hub``, tried last."""

from __future__ import annotations

import os

import datasets
from datasets import DatasetDict
from datasets.exceptions import DatasetNotFoundError, DatasetsError
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from ..errors import DataError
from .arguments import DataArguments


def _offline_flag() -> str | None:
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return variable
    return None


def load_hub(args: DataArguments) -> DatasetDict:
    name, config = args.dataset_name, args.dataset_config
    label = f"{name!r}" + (f" (config {config!r})" if config else "")
    try:
        loaded = datasets.load_dataset(name, config)
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError) as err:
        flag = _offline_flag()
        why = f"offline mode is on ({flag}=1)" if flag else "the Hub cannot be reached (offline: no network?)"
        raise DataError(
            f"Hub dataset {label} is not in the local cache and {why}. Run once online to cache it, or "
            f"download it with `hf download --repo-type dataset {name} --local-dir DIR` and pass DIR, or pass "
            "another local folder (imagefolder layout, save_to_disk output, or parquet/arrow files)."
        ) from err
    except DatasetNotFoundError as err:
        raise DataError(
            f"Hub dataset {label} was not found (a typo, or a gated/private dataset: log in with "
            f"`hf auth login`); pass a local folder for your own data: {err}"
        ) from err
    except (DatasetsError, ValueError) as err:  # e.g. an unknown config name, an unreadable file
        raise DataError(f"cannot load Hub dataset {label}: {err}") from err
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
