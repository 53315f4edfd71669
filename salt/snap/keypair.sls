{#- This server's own snap SSH key, published through the mine
    (mine_functions: {snap.pubkey: []} in pillar). -#}
{%- from "snap/map.jinja" import snap with context %}
include:
  - snap.core

snap-config-dir:
  file.directory:
    - name: {{ salt["file.dirname"](snap.client.key) }}
    - user: root
    - group: root
    - mode: "0700"
    - makedirs: True

snap-keypair:
  snap.keypair:
    - name: {{ snap.client.key }}
    - require:
      - file: snap-config-dir
      - snap-core

# Publish a new key at once instead of waiting for mine_interval.
snap-mine-update:
  module.run:
    - mine.update: []
    - onchanges:
      - snap: snap-keypair
