"""bridge's first-party plugins, installed as the package ``bridge_plugins``.

The repository directory is ``plugins/``; pyproject's ``package-dir`` installs it under the
import name ``bridge_plugins`` so it cannot collide with another distribution's top-level
``plugins`` package. Each plugin is available by default and inert until it has options
(``BRIDGE_PLUGIN_<NAME>_<OPTION>`` or the ``BRIDGE_PLUGINS_CONFIG`` file); see
docs/plugins.md. They use only the public hook contract (``bridge.hookimpl``, the
``JobContext`` fields) and bridge's error tree.
"""
