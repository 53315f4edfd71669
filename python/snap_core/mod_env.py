"""What a snap execution function sees of Salt, passed explicitly.

The execution module (``_modules/snap.py``) keeps every public function's
name, signature and docstring and nothing more: each calls its body in
:mod:`snap_core.mod_client`, :mod:`snap_core.mod_server`,
:mod:`snap_core.mod_archive` or :mod:`snap_core.mod_restore` with a
:class:`ModuleEnv`, the loader's dunders (``__salt__``, ``__opts__``,
``__grains__``, ``__context__``) and the module's logger, which those plain
modules cannot see themselves. Errors are Salt's (``CommandExecutionError``,
``SaltInvocationError``), as the module raised them before.
"""

import copy
import os

import salt.utils.dictupdate
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

import snap_core


class ModuleEnv:
    """The loader's dunders for one call of a snap execution function."""

    __slots__ = ("salt", "opts", "grains", "context", "log")

    def __init__(self, salt, opts, grains, context, log):
        self.salt = salt
        self.opts = opts
        self.grains = grains
        self.context = context
        self.log = log

    def pillar(self, key, default=None):
        """``pillar.get`` with real values: Salt 3008 masks them unless ``unmask=True``."""
        try:
            return self.salt["pillar.get"](key, default, unmask=True)
        except TypeError:  # Salt before 3008 has no unmask and does not mask
            return self.salt["pillar.get"](key, default)

    def settings(self):
        """``salt://snap/defaults.yaml`` with pillar ``snap`` merged over it and
        snap's paths under ``root_dir``; a copy (``snap.settings``)."""
        if "snap.settings" not in self.context:
            text = self.salt["cp.get_file_str"]("salt://snap/defaults.yaml")
            if not text:
                raise CommandExecutionError("salt://snap/defaults.yaml is missing from the file roots")
            defaults = salt.utils.yaml.safe_load(text)
            merged = salt.utils.dictupdate.merge(
                copy.deepcopy(defaults), self.pillar("snap", {}) or {}, strategy="recurse", merge_lists=False
            )
            root = self.opts.get("root_dir") or "/"
            for section, keys in defaults["root_relative"].items():
                for key in keys:
                    if merged[section].get(key):
                        merged[section][key] = os.path.join(root, merged[section][key].lstrip("/"))
            bin_env = merged["core"].get("bin_env")
            merged["core"]["python"] = (
                os.path.join(bin_env, "bin", "python") if bin_env else self.grains["pythonexecutable"]
            )
            self.context["snap.settings"] = merged
        return copy.deepcopy(self.context["snap.settings"])

    def settings_view(self):
        """:meth:`settings` without the copy, for read-only use (called once per
        account: a copy of the whole pillar each time adds up)."""
        if "snap.settings" not in self.context:
            self.settings()
        return self.context["snap.settings"]


def core(func, *args, **kwargs):
    """Call the core; turn its errors into CommandExecutionError with the same message."""
    try:
        return func(*args, **kwargs)
    except snap_core.Error as exc:
        raise CommandExecutionError(str(exc)) from exc


def server_dirs(srv):
    """(jails, history) of the backup server: pillar, or under ``base``."""
    return (
        srv.get("jails_dir") or os.path.join(srv["base"], "jails"),
        srv.get("history_dir") or os.path.join(srv["base"], "history"),
    )
