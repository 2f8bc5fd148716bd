"""Data layer: image tables, the decoded image cache, episodes, testcase and prediction files."""

import warnings

# torchvision 0.29 marks its JPEG/PNG codecs deprecated in favour of TorchCodec; they still work and are the
# fastest decoders available here. Silence the warning that would otherwise fire once per decoded image.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)
