"""Node settings: one frozen dataclass (:mod:`.settings`), the rules its values obey
(:mod:`.checks`), config.toml as ``init`` writes it (:mod:`.template`), its format version
(:mod:`.formats`) and where each setting comes from (:mod:`.load`).

Precedence: flags > IOMTNODE_* environment variables > config.toml > defaults.
"""

from .checks import LOG_LEVELS, parse_hostport
from .errors import ConfigError, Issue
from .formats import CONFIG_VERSION
from .load import Resolved, Setting, load_config, resolve
from .settings import ENV_PREFIX, Config
from .template import TEMPLATE, render

__all__ = [
    "CONFIG_VERSION",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "TEMPLATE",
    "Config",
    "ConfigError",
    "Issue",
    "Resolved",
    "Setting",
    "load_config",
    "parse_hostport",
    "render",
    "resolve",
]
