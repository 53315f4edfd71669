# Off-site storage and the backup server's put-only identity (docs/OFFSITE.md).
# Runs with an ADMINISTRATOR's AWS identity, never on the backup server:
#   salt-run state.orchestrate snap.offsite.provision pillar='{"snap": ...}' test=True
# or on an admin host: salt-call --local state.apply snap.offsite.provision test=True
# (salt-run snap.provision minion=<backup server> does the same from its pillar).
{%- set offsite = salt['pillar.get']('snap:offsite', {}) %}
{%- set name = offsite.get('vault') if offsite.get('kind') == 'glacier' and offsite.get('vault') else offsite.get('bucket') %}
{%- if name %}
snap-offsite-storage:
  snap.offsite_present:
    - name: {{ name }}
{%- else %}
snap-offsite-storage:
  test.fail_without_changes:
    - name: "pillar snap:offsite:bucket (or vault) is not set"
{%- endif %}
