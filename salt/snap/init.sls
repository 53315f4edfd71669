{#- Every server of the fleet: the core and its own key. -#}
include:
  - snap.core
  - snap.keypair
