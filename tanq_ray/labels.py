"""The label values of CrossMoDA volumes, for every module that reads, draws, trains on or scores them.

``<case>_Label.nii.gz`` holds 0 (background), 1 (vestibular schwannoma) and 2
(cochlea); the colours follow the paper's figures (VS red, cochlea sky-blue).
"""

BACKGROUND, VS, COCHLEA = 0, 1, 2
VALUES = (BACKGROUND, VS, COCHLEA)
UNLABELLED = 3
"""Training labels only: a voxel whose class is not known, so no loss is computed there (nnUNet's ``ignore`` label,
which must be the highest value). No scan, truth or prediction holds it."""
METRIC_NAMES = {VS: "vs", COCHLEA: "cochlea"}
"""How metrics name each structure: ``dice_vs``, ``assd_cochlea``."""
NNUNET_LABELS = {"background": BACKGROUND, "VS": VS, "cochlea": COCHLEA}
"""nnUNet's ``dataset.json`` labels (its names appear in nnUNet's logs and our fold metrics)."""
NNUNET_UNLABELLED = {"ignore": UNLABELLED}
"""Added to the ``dataset.json`` labels of a dataset with partly labelled cases."""
DISPLAY_NAMES = {VS: "VS", COCHLEA: "cochlea"}
COLOURS = {VS: (230, 40, 40), COCHLEA: (80, 200, 255)}
"""RGB of each structure's contour in every picture."""
