# Example top file: a backup server takes snap.server, every other server
# snap.client. Which minion is a backup server is the pillar's word
# (snap:backup_server:minion_id: the ext_pillar names each backup server
# itself when pillar snap:backup_servers lists several), so adding a backup
# server needs no change here. snap.verify acts only on the minions pillar
# snap:verify names (the drill minion and the master's own minion).
{%- set backup_server = salt["pillar.get"]("snap:backup_server:minion_id") %}
base:
  "*":
    - snap.verify
  {{ grains["id"] | json }}:
{%- if grains["id"] == backup_server %}
    - snap.server
{%- else %}
    - snap
{%- endif %}
