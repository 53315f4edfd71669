"""snap's Salt loader modules, shipped in the wheel next to the core they call.

The wheel declares the ``salt.loader`` entry point ``snap = "snap_core.saltext"``
(``pyproject.toml``). For an entry point that names a package, Salt 3008 looks in
it for one directory per loader kind (``modules/``, ``states/``, ``runners/``,
``pillar/``, ``beacons/``) and loads the files there like those synced from the
file roots, after ``module_dirs`` and ``extension_modules`` (synced files win)
and before Salt's own. So a minion or master that has the wheel installed has
snap's modules with no ``saltutil.sync_*``, at exactly the version of its core.

In the repository each file here is a relative symlink to the single source,
``_modules/snap.py`` and its siblings at the top level. maturin packs a
symlinked *file* as a regular file but skips a symlinked *directory*, hence one
link per module file (``make saltext-links`` adds missing ones;
``tests/unit/test_packaging.py`` fails while one is missing).
"""
