"""alexnet_jax: the network, recipe and results of Krizhevsky, Sutskever and Hinton (2012)."""

from alexnet_jax.inference import predict, restore
from alexnet_jax.model import AlexNet

__all__ = ['AlexNet', 'predict', 'restore']
