"""Node settings: one frozen dataclass (:mod:`.settings`), the rules its values obey
(:mod:`.checks`; HOST:PORT addresses: :mod:`.hostport`), config.toml as ``init`` writes it
(:mod:`.template`), its format version (:mod:`.formats`), where each setting comes from
(:mod:`.load`) and which ``IOMTNODE_*`` environment variables iomtnode reads
(:mod:`.environment`).

Precedence: flags > IOMTNODE_* environment variables > config.toml > defaults.
"""

from .checks import LOG_LEVELS
from .environment import KNOWN_VARIABLES, UnknownVariable, unknown_variables
from .errors import ConfigError, Issue
from .formats import CONFIG_VERSION
from .hostport import parse_hostport
from .load import Resolved, Setting, load_config, resolve
from .settings import ENV_PREFIX, Config
from .template import TEMPLATE, render

__all__ = [
    "CONFIG_VERSION",
    "ENV_PREFIX",
    "KNOWN_VARIABLES",
    "LOG_LEVELS",
    "TEMPLATE",
    "Config",
    "ConfigError",
    "Issue",
    "Resolved",
    "Setting",
    "UnknownVariable",
    "load_config",
    "parse_hostport",
    "render",
    "resolve",
    "unknown_variables",
]
