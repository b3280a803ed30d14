"""CIFAR-FS's class split (Bertinetto et al., "Meta-learning with differentiable closed-form
solvers", ICLR 2019): 64 / 16 / 20 of CIFAR-100's fine classes for meta-training, validation and
test. The lists are those distributed with the benchmark (the same sets in Torchmeta's
``cifar100/cifar-fs`` assets and in ArnoutDevos/maml-cifar-fs's split files), here sorted."""

CIFAR_FS_SPLIT = {
    "train": sorted([
        "dolphin", "seal", "aquarium_fish", "ray", "trout", "orchid", "sunflower", "tulip", "bottle", "bowl",
        "can", "cup", "plate", "apple", "mushroom", "orange", "pear", "clock", "keyboard", "chair", "couch",
        "bee", "caterpillar", "cockroach", "bear", "lion", "tiger", "wolf", "bridge", "castle", "house",
        "road", "skyscraper", "cloud", "forest", "mountain", "elephant", "kangaroo", "porcupine", "possum",
        "raccoon", "skunk", "lobster", "spider", "boy", "girl", "dinosaur", "lizard", "snake", "turtle",
        "hamster", "mouse", "rabbit", "shrew", "squirrel", "oak_tree", "palm_tree", "pine_tree",
        "willow_tree", "bus", "train", "lawn_mower", "streetcar", "tank",
    ]),
    "val": sorted([
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea", "camel",
        "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    ]),
    "test": sorted([
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard", "plain",
        "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck", "rocket",
    ]),
}
