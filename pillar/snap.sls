# Example pillar for snap. Every key is optional; the values shown are the
# defaults unless marked "example".
#
# The master also needs the ext_pillar that gives every minion its backup
# minute (master config):
#
#   ext_pillar:
#     - snap:
#         hours: [2, 10, 18]   # when servers push
#         slots: 60            # minute = crc32(minion id) % slots
#         key: id              # or "hostname" (the hostname grain; ids are unique, hostnames are not)
#
# Each minion then has snap:schedule:minute and snap:schedule:hours in its
# pillar. To give one server other hours, set snap:schedule:hours for it here.

# Publish each server's snap public key through the Salt mine. The backup
# server reads it back with snap.fleet_keys and validates every key again.
mine_functions:
  snap.pubkey: []

snap:
  core:
    # Where the wheel served from salt://snap/files/dist/ is cached.
    wheel_dir: /var/cache/snap/wheels
    # Python environment to install the core into; unset = the Python that
    # runs Salt (salt-pip on onedir installs). Set only for a separate venv.
    # bin_env: /opt/venvs/salt

  # This server's own snap SSH key (Ed25519, generated once, never replaced).
  # Default: <minion root_dir>/etc/snap/id_ed25519, i.e. /etc/snap/id_ed25519.
  #   key: /etc/snap/id_ed25519
  client: {}

  # schedule:
  #   hours: [2, 10, 18]        # example: per-server override of the push hours

  server:
    # Two minion ids that share their first label (web1.example.com and
    # web1.example.org) would share an account name; snap refuses both until
    # one gets its own name here. Example:
    # account_overrides:
    #   web1.example.org: snap-web1-org
    account_overrides: {}
