{#- A server of the fleet: its key, the backup server's pinned host key, the
    push configuration, pre-hooks directory, and the cron entry that pushes at
    its own minute (snap ext_pillar) under nice/ionice. -#}
{%- from "snap/map.jinja" import snap with context %}
{%- set sched = salt["pillar.get"]("snap:schedule", {}) %}
include:
  - snap.keypair

snap-client-state-dir:
  file.directory:
    - name: {{ snap.client.state_dir }}
    - user: root
    - group: root
    - mode: "0700"
    - makedirs: True

snap-hooks-dir:
  file.directory:
    - name: {{ snap.client.hooks_dir }}
    - user: root
    - group: root
    - mode: "0700"
    - makedirs: True

snap-known-hosts:
  snap.known_hosts:
    - name: {{ snap.client.known_hosts }}
    - require:
      - snap-core

snap-client-config:
  snap.client_config:
    - name: {{ snap.client.config }}
    - require:
      - snap: snap-keypair
      - snap: snap-known-hosts
      - file: snap-client-state-dir

{%- if sched.get("minute") is none %}
snap-push-cron:
  test.fail_without_changes:
    - name: "pillar snap:schedule:minute is missing: enable the snap ext_pillar on the master (ext_pillar: [{snap: {}}])"
{%- else %}
snap-push-cron:
  cron.present:
    - name: {{ snap.core.python }} -m snap_core push --quiet --config {{ snap.client.config }}
    - identifier: snap-push-{{ grains["id"] }}
    - user: root
    - minute: {{ sched.minute }}
    - hour: "{{ sched.hours | join(',') }}"
    - require:
      - snap: snap-client-config
{%- endif %}
