"""Built-in search spaces; importing this package registers them."""

from autonn.spaces import resnet, yolo
from autonn.spaces.base import SEARCH_SPACES, Arch, BlockSpec, SearchSpace, Supernet, get_search_space, register_search_space

__all__ = ["SEARCH_SPACES", "Arch", "BlockSpec", "SearchSpace", "Supernet", "get_search_space",
           "register_search_space", "resnet", "yolo"]
