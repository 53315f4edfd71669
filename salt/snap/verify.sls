{#- Proof on a schedule (docs/RESTORE.md). Apply to the drill minion
    (pillar snap:verify:minion: holds the drill key and a READ-ONLY off-site
    identity; never the backup server) and to the master's own minion
    (pillar snap:verify:master_minion), which runs the full drill through
    the runner because only the backup server can pick the sample.

    - drill minion: the off-site audit every day (locks, retain-until, the
      newest archive's age), record under its state dir;
    - master: `salt-run snap.verify` (sample on the backup server, restore
      and compare on the drill minion) once a week. -#}
{%- from "snap/map.jinja" import snap with context %}
{%- set ver = snap.get("verify", {}) %}
{%- set config = salt["file.join"](opts.get("root_dir") or "/", "etc/snap/verify.json") %}
{%- set state_dir = ver.get("state_dir") or snap.client.state_dir %}
include:
  - snap.core

{#- One audit per backup server: with several (pillar snap:backup_servers)
    each archives under its own prefix (snap/<its id>/, or
    snap:verify:prefixes:<its id>), and each gets its own config, record
    directory and cron line. -#}
{%- set several = snap.get("backup_servers") or {} %}
{%- set audits = [] %}
{%- if several %}
{%-   for b in several | map("string") | sort %}
{%-     do audits.append({"suffix": "-" ~ b, "backup": b,
                          "prefix": (ver.get("prefixes") or {}).get(b) or ("snap/" ~ b ~ "/"),
                          "config": salt["file.join"](opts.get("root_dir") or "/", "etc/snap/verify-" ~ b ~ ".json"),
                          "state_dir": salt["file.join"](state_dir, "verify-" ~ b)}) %}
{%-   endfor %}
{%- else %}
{%-   do audits.append({"suffix": "", "backup": snap.backup_server.minion_id,
                        "prefix": ver.get("prefix") or ("snap/" ~ snap.backup_server.minion_id ~ "/"),
                        "config": config, "state_dir": state_dir}) %}
{%- endif %}

{%- if grains["id"] == ver.get("minion") %}
{%-   if grains["id"] == snap.backup_server.minion_id or grains["id"] in several %}
snap-verify-not-on-the-backup-server:
  test.fail_without_changes:
    - comment: "pillar snap:verify:minion is a backup server: the drill key must live elsewhere"
{%-   else %}
{%-     if several %}
snap-verify-audit-one-backup-server-gone:
  cron.absent:
    - identifier: snap-verify-audit-{{ grains["id"] }}
    - user: root
{%-     endif %}
{%-     for audit in audits %}
snap-verify-config{{ audit.suffix }}:
  file.serialize:
    - name: {{ audit.config }}
    - serializer: json
    - dataset:
        target: {{ ver.get("target", {}) | json }}
        prefix: {{ audit.prefix | json }}
        minion_id: {{ audit.backup | json }}
    - user: root
    - group: root
    - mode: "0600"
    - makedirs: True

snap-verify-audit-cron{{ audit.suffix }}:
  cron.present:
    - name: {{ snap.core.python }} -m snap_core verify --quiet --config {{ audit.config }} --state-dir {{ audit.state_dir }} --max-age-days {{ ver.get("max_age_days", 16) }} --min-retain-days {{ ver.get("min_retain_days", 90) }}
    - identifier: snap-verify-audit-{{ grains["id"] }}{{ audit.suffix }}
    - user: root
{%-       set when = ver.get("audit_schedule", {"minute": 30, "hour": 6}) %}
{%-       for field in ("minute", "hour", "daymonth", "month", "dayweek") %}
{%-         if field in when %}
    - {{ field }}: "{{ when[field] }}"
{%-         endif %}
{%-       endfor %}
    - require:
      - file: snap-verify-config{{ audit.suffix }}
{%-     endfor %}
{%-   endif %}
{%- endif %}

{%- if grains["id"] == ver.get("master_minion") %}
snap-verify-drill-cron:
  cron.present:
    - name: salt-run snap.verify --out=json > /dev/null
    - identifier: snap-verify-drill-{{ grains["id"] }}
    - user: root
{%-   set when = ver.get("drill_schedule", {"minute": 0, "hour": 7, "dayweek": 0}) %}
{%-   for field in ("minute", "hour", "daymonth", "month", "dayweek") %}
{%-     if field in when %}
    - {{ field }}: "{{ when[field] }}"
{%-     endif %}
{%-   endfor %}
{%- endif %}
