"""quasineuron: train networks of devices that only approximately behave like neurons."""

from quasineuron.devices.base import AbstractDevice, Box, check_device

__version__ = "0.1.0"

__all__ = ["AbstractDevice", "Box", "check_device", "__version__"]
