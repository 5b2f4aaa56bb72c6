"""``python -m iomtnode.localnet``: the ``iomtnode localnet`` command on its own."""

from .. import log
from .cli import localnet_app

if __name__ == "__main__":  # pragma: no cover
    log.configure("info")
    localnet_app(prog_name="iomtnode localnet")
