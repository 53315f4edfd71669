{#- Install snap's core (the snap-backup wheel, served by the master from
    salt://snap/files/dist/) into the Python that runs Salt on this minion.
    Without bin_env, Salt's pip module uses that Python itself (salt-pip on
    onedir installs). Until this has run, every snap module reports itself
    unavailable with the reason. -#}
{%- from "snap/map.jinja" import snap with context %}
{%- set wheels = salt["cp.list_master"](prefix="snap/files/dist/")
      | select("match", ".*/snap_backup-[^/]*\\.whl$") | sort | list %}
{%- if not wheels %}
snap-core:
  test.fail_without_changes:
    - name: "No snap wheel under salt://snap/files/dist/ on the master: build it there with `make install`"
{%- else %}
{%- set wheel = wheels | last %}
{%- set cached = snap.core.wheel_dir ~ "/" ~ (wheel.split("/") | last) %}
# The core links libsquashfs (squashfs-tools-ng) at import time.
snap-core-libs:
  pkg.installed:
    - pkgs:
      - libsquashfs1
      - rsync

snap-core-wheel:
  file.managed:
    - name: {{ cached }}
    - source: salt://{{ wheel }}
    - makedirs: True
    - user: root
    - group: root
    - mode: "0644"

snap-core:
  pip.installed:
    - name: {{ cached }}
    {%- if snap.core.bin_env %}
    - bin_env: {{ snap.core.bin_env }}
    {%- endif %}
    - reload_modules: True
    - require:
      - file: snap-core-wheel
      - pkg: snap-core-libs
{%- endif %}
