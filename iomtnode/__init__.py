"""iomtnode: a permissioned proof-of-authority blockchain node for the Internet of Medical
Things."""

__version__ = "0.1.0"
