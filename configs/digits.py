"""Any registered model on the bundled digits, from scratch, in minutes on a CPU.

    python train.py --config=configs/digits.py:shufflenet_v2_050
    python train.py --config=configs/digits.py:resnet50 --config.train.epochs=5

The argument after the colon is the model name (default ``mobilenet_v1_050``, the quickstart's).
Every model trains at 32×32 with ``recipes.digits`` (Adam, warmup, cosine, light augmentation);
the large ones take fewer epochs, which is where their validation top-1 stops improving.
"""

from configs import recipes

DEFAULT_MODEL = "mobilenet_v1_050"
# Epochs per model where 30 is more than the model needs on ~1,400 images.
EPOCHS = {"resnet50": 15, "resnext50_32x4d": 15, "xception": 10}


def get_config(model_name: str = DEFAULT_MODEL):
    return recipes.digits(model_name, image_size=32, epochs=EPOCHS.get(model_name, 30))
