"""Small variants of every registered architecture (each model's own width/depth arguments),
for tests whose forward passes must stay cheap."""

CHEAP = {
    "mlp": {"hidden": [32]},
    "small_cnn": {"width": 8},
    "lenet": {},
    "resnet18": {"width": 8},
    "preact_resnet18": {"width": 8},
    "resnet56": {"depth": 8},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "vgg19_bn": {"width": 4},
    "resnext29": {"cardinality": 2, "bottleneck_width": 4, "widen_factor": 1},
    "densenet121": {"growth_rate": 4},
}
