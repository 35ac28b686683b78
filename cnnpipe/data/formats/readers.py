"""Which reader reads a dataset of ``params.datasets``: one plain table, ``READERS[(dataset, format)]``.

The built-in formats (``fashion_mnist``, ``scenes``) have no reader here: the prepare stages
build them from the fetched raw data.
"""

from __future__ import annotations

from collections.abc import Callable

from cnnpipe.config import DatasetParams, FetchParams
from cnnpipe.data.formats.csv_boxes import read_csv_boxes
from cnnpipe.data.formats.folders import read_class_folders, read_segmentation_folders
from cnnpipe.data.formats.idx_dir import read_idx_dir
from cnnpipe.data.formats.oxford_pet import read_oxford_pet
from cnnpipe.data.items import TaskData
from cnnpipe.errors import DataError

# (params, seed, fetch) -> TaskData; seed drives the held-out test split where the data names none.
Reader = Callable[[DatasetParams, int, FetchParams], TaskData]

READERS: dict[tuple[str, str], Reader] = {
    ("classification", "idx"): lambda params, seed, fetch: read_idx_dir(params),
    ("classification", "folders"): lambda params, seed, fetch: read_class_folders(params, seed),
    ("segmentation", "folders"): lambda params, seed, fetch: read_segmentation_folders(params, seed),
    ("localization", "csv"): lambda params, seed, fetch: read_csv_boxes(params, seed),
    ("localization", "oxford_pet"): read_oxford_pet,
    ("segmentation", "oxford_pet"): read_oxford_pet,
}


def read_task_data(dataset: str, params: DatasetParams, seed: int, fetch: FetchParams) -> TaskData:
    """Read the own ``dataset`` (classification, localization, segmentation) ``params`` names."""
    key = (dataset, params.format)
    if key not in READERS:
        raise DataError(f"datasets.{dataset}: format {params.format!r} is built in, not read from files")
    data = READERS[key](params, seed, fetch)
    for split in ("train", "test"):
        if not data.splits[split].labels:
            raise DataError(f"datasets.{dataset} ({params.path or params.url}): the {split} split is empty")
    return data
