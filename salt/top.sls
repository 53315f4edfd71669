# Example top file: the backup server takes snap.server, every other server
# snap.client. Use your backup server's minion id here and in pillar
# snap:backup_server:minion_id. snap.verify acts only on the minions pillar
# snap:verify names (the drill minion and the master's own minion).
base:
  "*":
    - snap.verify
  "backup1":
    - snap.server
  "* and not backup1":
    - match: compound
    - snap
