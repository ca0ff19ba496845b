"""Real data: readers of on-disk formats, named datasets, the shots budget."""
from distill_bench.data.datasets import (DATASETS, RealDataset, get_data_root,  # noqa: F401
                                         image_folder_dataset, list_datasets, load_dataset)
from distill_bench.data.readers import DataFileError  # noqa: F401
