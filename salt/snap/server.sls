{#- The backup server: one jailed push account per server from the mine,
    forced into snap-receive (a write-only rsync receiver confined to its
    jail, run as root by sudo; the receiving rsync runs as the account), an
    sshd Match block for them, rsnapshot history out of their reach, and cron
    for rotation. It gets no key that any server trusts. -#}
{%- from "snap/map.jinja" import snap with context %}
{%- set srv = snap.server %}
{%- set jails = srv.jails_dir or srv.base ~ "/jails" %}
{%- set history = srv.history_dir or srv.base ~ "/history" %}
{%- set receive_command = "/usr/bin/sudo -n " ~ srv.receive ~ " " ~ srv.config %}
include:
  - snap.core

snap-server-packages:
  pkg.installed:
    - pkgs: [rsync, rsnapshot, sudo, quota, util-linux, openssh-server]

{#- snap-receive relies on rsync's --confine-root (rsync 3.5): without it
    every push is refused, never received unconfined. #}
snap-rsync-confinement:
  cmd.run:
    - name: "echo 'rsync on this backup server has no --confine-root (needs rsync >= 3.5): snap-receive refuses every push until it is upgraded' >&2; exit 1"
    - unless: /usr/bin/rsync --help | grep -q -e --confine-root
    - require:
      - pkg: snap-server-packages

{#- One group for every push account (their primary group): a gid of its
    own, chosen in pillar (snap:server:gid). A group that exists keeps its gid. #}
snap-push-group:
  group.present:
    - name: {{ srv.group }}
{%- if not salt["group.info"](srv.group) %}
    - gid: {{ srv.gid }}
{%- endif %}

{#- 0711: accounts can reach their own jail but list nothing. -#}
{%- for path, mode in [(srv.base, "0711"), (jails, "0711"), (history, "0700"),
                      (srv.authorized_keys_dir, "0755"), (srv.state_dir, "0700"),
                      (srv.log_dir, "0750"), (srv.run_dir, "0755")] %}
snap-dir-{{ loop.index }}:
  file.directory:
    - name: {{ path }}
    - user: root
    - group: root
    - mode: "{{ mode }}"
    - makedirs: True
{%- endfor %}

{#- The fleet's new accounts in one pass of the account tables; each
    server's state below completes its own (and makes it alone if this
    failed: no requisite on it). #}
snap-accounts-made:
  snap.accounts_made:
    - name: {{ srv.group }}
    - require:
      - group: snap-push-group
      - snap-core
{%- for i in range(1, 8) %}
      - file: snap-dir-{{ i }}
{%- endfor %}

{%- set mine = salt["mine.get"]("*", "snap.pubkey") %}
{%- set excluded = (srv.exclude or []) + [grains["id"]] %}
{%- for minion_id in mine | sort %}
{#-   With several backup servers, only the servers assigned to this one. #}
{%-   if minion_id not in excluded and salt["snap.assigned_here"](minion_id) %}
{{ ("snap-account-" ~ minion_id) | json }}:
  snap.account:
    - name: {{ minion_id | json }}
    - require:
      - group: snap-push-group
      - file: snap-receive
      - file: snap-sudoers
      - snap-core
{%-     for i in range(1, 8) %}
      - file: snap-dir-{{ i }}
{%-     endfor %}
{#-     No requisite towards snap-server-config: one server with a bad key
        or a colliding id must not stop the rest of the fleet's backups. #}
{%-   endif %}
{%- endfor %}

snap-receive:
  file.managed:
    - name: {{ srv.receive }}
    - source: salt://snap/files/snap-receive
    - user: root
    - group: root
    - mode: "0755"
    - makedirs: True

snap-as-account:
  file.managed:
    - name: {{ srv.as_account }}
    - source: salt://snap/files/snap-as-account
    - user: root
    - group: root
    - mode: "0755"
    - makedirs: True

snap-sudoers:
  file.managed:
    - name: {{ srv.sudoers }}
    - source: salt://snap/files/sudoers_snap.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: "0440"
    - check_cmd: /usr/sbin/visudo -c -q -f
    - context:
        group: {{ srv.group }}
        receive: {{ srv.receive }}
        config: {{ srv.config }}
    - require:
      - pkg: snap-server-packages
      - file: snap-receive

snap-retired:
  snap.retired:
    - name: {{ srv.group }}
    - require:
      - group: snap-push-group
      - snap-core

{#- Servers read their account name from here (mine: snap.accounts). #}
snap-accounts-published:
  snap.accounts_published:
    - name: snap.accounts
    - require:
      - snap-core

snap-server-config:
  snap.server_config:
    - name: {{ srv.config }}
    - require:
      - snap-core
      - file: snap-as-account
{%- for i in range(1, 8) %}
      - file: snap-dir-{{ i }}
{%- endfor %}

snap-sshd-conf:
  file.managed:
    - name: {{ srv.sshd_config_dir }}/snap.conf
    - source: salt://snap/files/sshd_snap.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: "0644"
    - makedirs: True
    - context:
        group: {{ srv.group }}
        authorized_keys_dir: {{ srv.authorized_keys_dir }}
        command: {{ receive_command }}
        max_startups: {{ srv.max_startups | string | yaml_dquote }}

snap-sshd-check:
  cmd.run:
    - name: /usr/sbin/sshd -t -f {{ srv.sshd_config }}
    - onchanges:
      - file: snap-sshd-conf

{%- if srv.manage_sshd_service %}
snap-sshd-reload:
  service.running:
    - name: {{ srv.sshd_service }}
    - enable: True
    - reload: True
    - watch:
      - file: snap-sshd-conf
    - require:
      - cmd: snap-sshd-check
{%- endif %}

{%- for level in srv.levels %}
{%-   set when = srv.rotate_schedule.get(level.name, {}) %}
snap-rotate-{{ level.name }}:
  cron.present:
    - name: {{ snap.core.python }} -m snap_core rotate {{ level.name }} --config {{ srv.config }}
    - identifier: snap-rotate-{{ level.name }}-{{ grains["id"] }}
    - user: root
{%-   for field in ("minute", "hour", "daymonth", "month", "dayweek") %}
{%-     if field in when %}
    - {{ field }}: "{{ when[field] }}"
{%-     endif %}
{%-   endfor %}
    - require:
      - snap: snap-server-config
{%- endfor %}

snap-metrics-cron:
  cron.present:
    - name: {{ snap.core.python }} -m snap_core metrics --config {{ srv.config }} --out {{ srv.metrics_file }}
    - identifier: snap-metrics-{{ grains["id"] }}
    - user: root
    - minute: "*/5"
    - require:
      - snap: snap-server-config

{#- The archive pipeline: only once an off-site target is configured. #}
{%- set arc = snap.archive %}
{%- if arc.target %}
snap-archive-config:
  snap.archive_config:
    - name: {{ arc.config }}
    - require:
      - snap-core
{%-   for i in range(1, 8) %}
      - file: snap-dir-{{ i }}
{%-   endfor %}

snap-archive-cron:
  cron.present:
    - name: nice -n 10 ionice -c 2 -n 7 {{ snap.core.python }} -m snap_core archive --quiet --config {{ arc.config }}
    - identifier: snap-archive-{{ grains["id"] }}
    - user: root
{%-   for field in ("minute", "hour", "daymonth", "month", "dayweek") %}
{%-     if field in arc.schedule %}
    - {{ field }}: "{{ arc.schedule[field] }}"
{%-     endif %}
{%-   endfor %}
    - require:
      - snap: snap-archive-config
{%- else %}
snap-archive-not-configured:
  test.show_notification:
    - text: "No off-site target in pillar snap:archive:target: history is kept here only and NOT archived off-site."
{%- endif %}
