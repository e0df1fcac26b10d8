"""Converters from datasets as their authors distribute them to nnU-Net v2 raw datasets.

Every converter is a function ``convert_<name>(source, dataset_id, ...) -> Path`` in its own module and a subcommand of
``nnunet_lite convert``. This module holds the registry: one :class:`DatasetSpec` per dataset and the table of default
dataset IDs. Converter modules are imported lazily (:func:`get_converter`).

Default IDs live in the free range 5xx: 501-509 for the training datasets, 511-519 for the zero-shot targets, 520-529
reserved for the 3D converters (BTCV, KiTS23).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IDS: dict[str, int] = {
    "isic2017": 501,
    "isic2018": 502,
    "busi": 503,
    "kvasir": 504,
    "tn-scui": 505,
    "ph2": 511,
    "cvc-clinicdb": 512,
    "bus-b": 513,
    "btcv": 520,
    "kits23": 521,
}


@dataclass(frozen=True)
class DatasetSpec:
    """What ``nnunet_lite convert --list`` and the docs say about one dataset.

    Attributes:
        name: the NAME of ``nnunet_lite convert NAME SOURCE``.
        module: module of this package that holds the converter.
        folder_name: the part after ``DatasetXXX_`` of the nnU-Net folder.
        title: human-readable name with the reference paper.
        layout: the folders and files SOURCE must contain (or contain one level down).
        source: where the official download is.
        license: licence note (read the one that comes with your download).
        role: "train" for datasets the papers train on, "zero-shot" for generalisation targets.
    """

    name: str
    module: str
    folder_name: str
    title: str
    layout: str
    source: str
    license: str
    role: str

    @property
    def default_id(self) -> int:
        return DEFAULT_IDS[self.name]

    @property
    def function_name(self) -> str:
        return "convert_" + self.name.replace("-", "_")


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="isic2017",
            module="isic",
            folder_name="ISIC2017",
            title="ISIC 2017 Part 1 lesion segmentation (Codella et al., ISBI 2018), dermoscopy RGB",
            layout="ISIC-2017_Training_Data/ISIC_*.jpg + ISIC-2017_Training_Part1_GroundTruth/*_segmentation.png; "
            "optional ISIC-2017_Validation_Data/_Part1_GroundTruth, ISIC-2017_Test_v2_Data/_Part1_GroundTruth",
            source="https://challenge.isic-archive.com/data/#2017",
            license="CC-0 (ISIC 2017 challenge data); read LICENSE.txt in the download",
            role="train",
        ),
        DatasetSpec(
            name="isic2018",
            module="isic",
            folder_name="ISIC2018",
            title="ISIC 2018 Task 1 lesion boundary segmentation (Codella et al., 2019), dermoscopy RGB",
            layout="ISIC2018_Task1-2_Training_Input/ISIC_*.jpg + ISIC2018_Task1_Training_GroundTruth/"
            "*_segmentation.png; optional ISIC2018_Task1-2_{Validation,Test}_Input + "
            "ISIC2018_Task1_{Validation,Test}_GroundTruth",
            source="https://challenge.isic-archive.com/data/#2018",
            license="see LICENSE.txt in the ISIC 2018 zips (CC BY-NC 4.0 is usually cited)",
            role="train",
        ),
        DatasetSpec(
            name="busi",
            module="busi",
            folder_name="BUSI",
            title="BUSI breast ultrasound (Al-Dhabyani et al., Data in Brief 2020)",
            layout='Dataset_BUSI_with_GT/{benign,malignant,normal}/"<class> (N).png" + "<class> (N)_mask.png" '
            "[+ _mask_1.png, _mask_2.png]; also accepted: the CMUNeXt layout images/ + masks/0/",
            source="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset (Kaggle mirror: "
            "aryashah2k/breast-ultrasound-images-dataset)",
            license="article CC BY 4.0; no data licence on the original host (Kaggle mirror says CC0); cite the paper",
            role="train",
        ),
        DatasetSpec(
            name="kvasir",
            module="kvasir",
            folder_name="KvasirSEG",
            title="Kvasir-SEG polyps (Jha et al., MMM 2020), colonoscopy RGB",
            layout="Kvasir-SEG/images/<id>.jpg + Kvasir-SEG/masks/<id>.jpg (+ kavsir_bboxes.json)",
            source="https://datasets.simula.no/kvasir-seg/",
            license="research and education only; commercial use needs prior permission from Simula",
            role="train",
        ),
        DatasetSpec(
            name="tn-scui",
            module="tn_scui",
            folder_name="TNSCUI",
            title="TN-SCUI 2020 thyroid nodule ultrasound (MICCAI 2020 challenge)",
            layout="image/<ID>.PNG + mask/<ID>.PNG (+ train.csv with ID,CATE)",
            source="https://tn-scui2020.grand-challenge.org/ (registration; redistribution forbidden)",
            license="challenge terms: research only, no redistribution",
            role="train",
        ),
        DatasetSpec(
            name="ph2",
            module="ph2",
            folder_name="PH2",
            title="PH2 dermoscopy (Mendonca et al., EMBC 2013), zero-shot target for ISIC",
            layout='PH2Dataset/"PH2 Dataset images"/IMDxxx/{IMDxxx_Dermoscopic_Image/IMDxxx.bmp, '
            "IMDxxx_lesion/IMDxxx_lesion.bmp}",
            source="https://www.fc.up.pt/addi/ph2%20database.html",
            license="free for research use; cite the paper",
            role="zero-shot",
        ),
        DatasetSpec(
            name="cvc-clinicdb",
            module="cvc_clinicdb",
            folder_name="CVCClinicDB",
            title="CVC-ClinicDB polyps (Bernal et al., CMIG 2015), zero-shot target for Kvasir-SEG",
            layout='CVC-ClinicDB/Original/<n>.tif + "CVC-ClinicDB/Ground Truth"/<n>.tif (PNG/ copies accepted)',
            source="https://polyp.grand-challenge.org/CVCClinicDB/",
            license="research and education only, commercial use forbidden (README.txt)",
            role="zero-shot",
        ),
        DatasetSpec(
            name="bus-b",
            module="bus_b",
            folder_name="BUSB",
            title="BUS Dataset B, UDIAT (Yap et al., JBHI 2018), zero-shot target for BUSI",
            layout="BUS_Dataset_B/original/<n>.png + BUS_Dataset_B/GT/<n>.png (+ DatasetB.xlsx)",
            source="on request from the authors (Yap et al., Manchester Metropolitan University)",
            license="research only, on request; no redistribution",
            role="zero-shot",
        ),
        DatasetSpec(
            name="btcv",
            module="btcv",
            folder_name="BTCV",
            title="BTCV / Synapse multi-organ abdominal CT, 13 organs (Landman et al., MICCAI 2015 Beyond the "
            "Cranial Vault challenge), 3D",
            layout="RawData/Training/img/img0001.nii.gz + RawData/Training/label/label0001.nii.gz; optional "
            "RawData/Test/img/img0061.nii.gz",
            source="https://www.synapse.org/#!Synapse:syn3193805 (Synapse registration; Abdomen/RawData)",
            license="challenge terms on Synapse (registration required; no redistribution)",
            role="train",
        ),
        DatasetSpec(
            name="kits23",
            module="kits23",
            folder_name="KiTS23",
            title="KiTS23 kidney, tumour and cyst CT (Heller et al., KiTS 2023 challenge), 3D, region-based",
            layout="dataset/case_00000/{imaging.nii.gz, segmentation.nii.gz} (github.com/neheller/kits23 after "
            "kits23_download_data)",
            source="https://github.com/neheller/kits23 (segmentations in git; imaging via kits23_download_data)",
            license="CC BY-NC-SA 4.0 (data); cite Heller et al.",
            role="train",
        ),
    )
}


def dataset_folder(name: str, dataset_id: int | None = None) -> str:
    """nnU-Net folder name of a dataset, e.g. ``dataset_folder("busi") == "Dataset503_BUSI"``."""
    spec = DATASETS[name]
    return f"Dataset{spec.default_id if dataset_id is None else dataset_id:03d}_{spec.folder_name}"


def get_module(name: str):
    """The converter module of dataset ``name`` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{DATASETS[name].module}")


def get_converter(name: str) -> Callable[..., Path]:
    """The function ``convert_<name>`` of dataset ``name``."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return getattr(get_module(name), DATASETS[name].function_name)


__all__ = ["DATASETS", "DEFAULT_IDS", "DatasetSpec", "dataset_folder", "get_converter", "get_module"]
