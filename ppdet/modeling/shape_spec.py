"""What a component hands to the next one: channels and stride of each output map."""
from typing import NamedTuple


class ShapeSpec(NamedTuple):
    channels: int
    stride: int
