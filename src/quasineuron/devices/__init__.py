"""Describe: the device contract and one adapter module per device kind."""

from quasineuron.devices.base import AbstractDevice, Box, check_device

__all__ = ["AbstractDevice", "Box", "check_device"]
