"""DeepLab v3 (MobileNet v2, no decoder: the DeepLab model zoo's light model) on the shapes.

python train.py --config=configs/deeplabv3_shapes.py --workdir=runs/deeplabv3_shapes
"""

from configs import recipes


def get_config():
    return recipes.shapes_segmentation("deeplabv3_mobilenet_v2_100")
