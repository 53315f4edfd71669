{#- Install snap's core: the snap-backup wheel, which carries the Rust core with
    libsquashfs bundled (no compiler, no -dev package, no libsquashfs1 here)
    and snap's Salt modules (found through its salt.loader entry point: no
    saltutil.sync_* needed). It goes into the Python that runs Salt: without
    bin_env, Salt's pip module uses salt-pip on onedir installs and the running
    Python otherwise (a virtualenv Salt); pillar snap:core:bin_env names another
    environment. Until this has run, every snap module reports itself
    unavailable with the reason.

    Where the wheel comes from (pillar snap:core:source):
      salt://snap/files/dist/   (default) a directory on the master's file
                                server: the newest snap_backup-*.whl there (or
                                snap:core:version), checked against the
                                SHA256SUMS beside it when there is one
      salt://.../snap_backup-<version>-<tags>.whl   one wheel on the master
      https://.../snap_backup-<version>-<tags>.whl  one wheel on a web server;
                                snap:core:source_hash (a sha256 or the URL of
                                a SHA256SUMS file) is required
      index                     `snap-backup[==snap:core:version]` from pip's
                                index (snap:core:index_url / extra_index_url,
                                else pip's own configuration), wheels only -#}
{%- from "snap/map.jinja" import snap with context %}
{%- set core = snap.core %}
{%- set source = (core.source or "salt://snap/files/dist/") | string %}
{%- set ns = namespace(wheel=None, version=None, hash=core.source_hash, problem=None) %}
{%- if source == "index" %}
{%- elif source.startswith("salt://") and source.endswith("/") %}
{%-   set prefix = source[7:] %}
{%-   set listed = salt["cp.list_master"](prefix=prefix) %}
{%-   set wanted = (core.version | string | regex_escape) if core.version else "[^-/]+" %}
{%-   for path in listed | select("match", "^" ~ (prefix | regex_escape) ~ "snap_backup-" ~ wanted ~ "-[^/]+\\.whl$") %}
{%-     set version = path.split("/") | last | replace("snap_backup-", "", 1) %}
{%-     set version = version.split("-") | first %}
{%-     if ns.wheel is none or salt["pkg_resource.version_compare"](version, ">", ns.version) %}
{%-       set ns.wheel = "salt://" ~ path %}
{%-       set ns.version = version %}
{%-     endif %}
{%-   endfor %}
{%-   if ns.wheel is none %}
{%-     set ns.problem = "No snap wheel" ~ (" " ~ core.version if core.version else "") ~ " under " ~ source ~ " on the master: put the release's snap_backup-*.whl and SHA256SUMS there (make dist)" %}
{%-   elif not ns.hash and (prefix ~ "SHA256SUMS") in listed %}
{%-     set ns.hash = source ~ "SHA256SUMS" %}
{%-   endif %}
{%- elif source.endswith(".whl") and (source.startswith("salt://") or source.startswith("https://") or source.startswith("http://")) %}
{%-   set ns.wheel = source %}
{%-   if not source.startswith("salt://") and not ns.hash %}
{%-     set ns.problem = "snap:core:source " ~ source ~ " needs snap:core:source_hash (its sha256, or the URL of the release's SHA256SUMS)" %}
{%-   endif %}
{%- else %}
{%-   set ns.problem = "snap:core:source must be a salt:// directory (ending in /), a salt:// or https:// URL of a snap_backup-*.whl, or `index`; got " ~ source %}
{%- endif %}

# rsync carries every push (servers) and receives it (backup server).
snap-core-tools:
  pkg.installed:
    - pkgs:
      - rsync

{%- if ns.problem %}

snap-core:
  test.fail_without_changes:
    - comment: {{ ns.problem | yaml_dquote }}
{%- else %}
{%-   if ns.wheel %}
{%-     set cached = core.wheel_dir ~ "/" ~ (ns.wheel.split("/") | last) %}

snap-core-wheel:
  file.managed:
    - name: {{ cached }}
    - source: {{ ns.wheel }}
    {%- if ns.hash %}
    - source_hash: {{ ns.hash }}
    {%- endif %}
    - makedirs: True
    - user: root
    - group: root
    - mode: "0644"

# Only the wheel in use stays cached.
snap-core-wheel-dir:
  file.directory:
    - name: {{ core.wheel_dir }}
    - clean: True
    - require:
      - file: snap-core-wheel
{%-   endif %}

snap-core:
  pip.installed:
    {%- if ns.wheel %}
    - name: {{ cached }}
    {%- else %}
    - name: snap-backup{{ ("==" ~ core.version) if core.version else "" }}
    {%-   if core.index_url %}
    - index_url: {{ core.index_url }}
    {%-   endif %}
    {%-   if core.extra_index_url %}
    - extra_index_url: {{ core.extra_index_url }}
    {%-   endif %}
    {%- endif %}
    # Never build anything here: a wheel or nothing.
    - extra_args:
      - --only-binary: ":all:"
    {%- if core.bin_env %}
    - bin_env: {{ core.bin_env }}
    {%- endif %}
    - reload_modules: True
    - require:
      - pkg: snap-core-tools
      {%- if ns.wheel %}
      - file: snap-core-wheel
      {%- endif %}
{%- endif %}
