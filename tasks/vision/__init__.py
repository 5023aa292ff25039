"""Image code shared by several stages: decoding, the face detector and cropper, backbones, batched models."""
