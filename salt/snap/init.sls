{#- A server of the fleet (the backup server takes snap.server instead). -#}
include:
  - snap.client
