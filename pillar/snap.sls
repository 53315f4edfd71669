# Example pillar for snap, complete and commented. Every setting is optional:
# the defaults are in salt://snap/defaults.yaml (salt/snap/defaults.yaml) and
# are shown here. snap's own paths are prefixed with each minion's root_dir,
# which is "/" on a real machine.
#
# The master also needs the ext_pillar that gives every minion its backup
# minute (master config):
#
#   ext_pillar:
#     - snap:
#         hours: [2, 10, 18]   # when servers push
#         slots: 60            # minute = crc32(minion id) % slots
#         key: id              # or "hostname" (ids are unique, hostnames are not)
#
# Each minion then has snap:schedule:{minute,second,hours} in its pillar. To
# give one server other hours, set snap:schedule:hours for it here.

{%- set backup_server = "backup1" %}

# Keys go through the Salt mine: every server publishes its own snap public
# key and push records, each backup server its SSH host key (servers pin
# it; no trust on first use) and the account names it gave. The snap
# ext_pillar sets these mine_functions by role (the minion that
# snap:backup_server:minion_id names is a backup server), so there is
# nothing to list here; whoever reads them validates them again, and a
# minion can only publish its own mine data.

# Turn snap's run records (pushes, rotations, archives) into Salt events
# (salt/beacon/<id>/snap/push/done, .../push/failed, ...), for reactors
# such as salt://reactor/snap-alert.sls.
beacons:
  snap:
    - interval: 60

snap:
  core:
    # Where the snap wheel comes from (one wheel: the Rust core with
    # libsquashfs bundled, and snap's Salt modules; nothing is compiled here):
    #   salt://snap/files/dist/     the master's file server (default): the
    #                               newest snap_backup-*.whl there, checked
    #                               against the SHA256SUMS beside it
    #   https://repo.example.com/snap/snap_backup-1.0.0-cp39-abi3-manylinux_2_34_x86_64.whl
    #                               a web server; needs source_hash
    #   index                       pip's package index (index_url below, or
    #                               pip.conf): snap-backup==<version>
    source: salt://snap/files/dist/
    # source_hash: https://repo.example.com/snap/SHA256SUMS   # or the sha256 itself
    # version: 1.0.0            # pin (recommended with `index`)
    # index_url: https://pypi.internal.example.com/simple/
    # Where a downloaded wheel is cached.
    wheel_dir: /var/cache/snap/wheels
    # Python environment to install the core into; unset = the Python that
    # runs Salt (salt-pip on onedir installs). Set only for a separate venv.
    # bin_env: /opt/venvs/salt

  # Where servers push to.
  backup_server:
    minion_id: {{ backup_server }}
    host: backup1.example.com     # the address servers connect to
    port: 22
    # Pin the host key(s) yourself instead of taking them from the mine:
    # host_keys:
    #   - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...

  # Several backup servers (docs/SCALE.md): the snap ext_pillar then gives
  # every server its own snap:backup_server (this map wins over the one
  # above), by rendezvous hashing or by the explicit assignment; each backup
  # server makes accounts only for its own servers, takes snap.server by the
  # example top file and publishes snap.hostkey and snap.accounts (the
  # ext_pillar's mine_functions). salt-run snap.status, archive, verify and
  # restore span every backup server (tgt= picks one).
  # backup_servers:
  #   backup1: {host: backup1.example.com, port: 22}
  #   backup2: {host: backup2.example.com, port: 22}
  # assignment:
  #   db1.example.com: backup2

  client:
    # This server's own snap SSH key (Ed25519, generated once, never replaced).
    # key: /etc/snap/id_ed25519
    # What to back up (absolute paths; a missing path fails the push with a
    # clear error before anything is sent, so nothing already backed up is
    # lost to a typo or an unmounted disk):
    paths:
      - /etc
      - /root
      - /home
      - /srv
      - /var/backups
      - /var/spool/cron
    # rsync exclude patterns:
    excludes:
      - /proc/
      - /sys/
      - /dev/
      - /run/
      - /tmp/
      - "*.swp"
    # Executables run in name order before each push (e.g. a database dump
    # into /var/backups). Root-owned and not writable by others, or the push
    # refuses them. Each gets SNAP_RUN_ID, SNAP_MINION_ID, SNAP_STAGE=pre.
    # hooks_dir: /etc/snap/hooks.d
    hook_timeout: 3600
    # Be gentle with the server's own work:
    nice: 19
    ionice_class: 2          # 2 = best effort (level 0-7), 3 = idle
    ionice_level: 7
    bwlimit_kbps: null       # e.g. 20000 for ~20 MB/s
    # Transient failures (backup server down, rotation running) are retried:
    retries: 3
    retry_delay: 30          # seconds, doubling each time
    connect_timeout: 30
    io_timeout: 600          # a transfer stalled this long is aborted

  server:
    # Jails (<base>/jails, 0711) and history (<base>/history, 0700 root).
    base: /srv/snap
    # The push accounts' one group (their primary group) and where their
    # uids come from: away from system and regular users.
    group: snap-push
    gid: 65536
    uid_range: [65536, 99999]
    # Retention, lowest level first: two years by default.
    levels:
      - {name: recent, keep: 6}     # 3 a day for 2 days
      - {name: daily, keep: 14}     # daily for 2 weeks
      - {name: weekly, keep: 8}     # weekly for 2 months
      - {name: monthly, keep: 24}   # monthly for 2 years
    rotate_schedule:
      recent: {minute: 0, hour: "4,12,20"}
      daily: {minute: 30, hour: 3}
      weekly: {minute: 0, hour: 3, dayweek: 1}
      monthly: {minute: 30, hour: 2, daymonth: 1}
    # Seconds rotation waits for a running push before keeping that
    # server's previous snapshot.
    lock_wait: 300
    # Account names need no manual step: each server gets `snap-` and the
    # shortest part of its id that no other server shares (web1.dc1.example.com
    # and web1.dc2.example.com: snap-web1-dc1, snap-web1-dc2; a lone
    # db1.example.com: snap-db1), or a short hash when none is free; an
    # existing account keeps its name. Give one a name of your own here:
    # account_overrides:
    #   web1.example.org: snap-web1-org
    account_overrides: {}
    # Minion ids that never get an account (the backup server never does).
    exclude: []
    # Servers gone from the mine keep a locked account and their data until
    # their account is listed here; then both are deleted.
    purge: []
    # The system sshd: its config, the directory snap's Match block goes
    # into, and whether to reload the service when it changes.
    # sshd_config: /etc/ssh/sshd_config
    # sshd_config_dir: /etc/ssh/sshd_config.d
    # manage_sshd_service: true
    # host_key: /etc/ssh/ssh_host_ed25519_key.pub

  # Off-site archives, made on the backup server: the whole history packed
  # (SquashFS), encrypted to OpenPGP PUBLIC key(s) whose private half is kept
  # offline, uploaded under S3 Object Lock COMPLIANCE. Nothing is archived
  # until a target is set.
  archive:
    # Armored public keys, or paths of key files on the backup server.
    # Secret key material anywhere is refused and never written to disk.
    recipients: []
    #  - |
    #    -----BEGIN PGP PUBLIC KEY BLOCK-----
    #    ...
    #    -----END PGP PUBLIC KEY BLOCK-----
    # Where: credentials come from the AWS chain (instance profile, role,
    # a profile in a root-only credentials file); never put keys here.
    target: {}
    #   bucket: example-snap-archives
    #   region: eu-west-1
    #   profile: snap-backup             # optional
    #   credentials_file: /root/.aws/credentials
    #   kind: glacier                    # for an existing Glacier vault:
    #   vault: example-vault             #   vault instead of bucket
    #   endpoint_url: https://rgw.example.com   # an S3-compatible server (Ceph RGW, MinIO): path-style
    #   stall_timeout: 300               # seconds a download waits for an answer or a byte before it retries
    prefix: null            # object key prefix; default snap/<backup server id>
    storage_class: GLACIER  # or DEEP_ARCHIVE (cheaper, 180-day minimum, slower restore); STANDARD on Ceph RGW/MinIO
    retain_days: 90         # COMPLIANCE retention; never less than 90
    servers: null           # only these minion ids; null: the whole history
    pack:
      compressor: zstd
      level: 15
    chain:                  # incremental archives (docs/RESTORE.md)
      enabled: null         # a base, then links that upload only what is new; null: on for S3, off for
                            # a Glacier vault; False: a full archive every run (needs no wider cap)
      max_age_days: 180     # a new base once the chain is this old; the off-site retention cap is
                            # retain_days + max_age_days + 7 days (a compromised backup server cannot lock longer)
      max_dead_ratio: 0.5   # ... or once half the image's data has expired from history
    prices: {}              # USD per GiB-month over the list prices, e.g. {GLACIER: 0.0036}
    schedule: {minute: 0, hour: 5, daymonth: "1,15"}   # twice a month

  # salt-run snap.status: when a server counts as LATE or MISSING.
  status:
    grace_seconds: 7200   # a push gets 2 hours after its slot
    missing_after: 2      # missed slots from which it is MISSING (below: LATE)
    timezone: null        # the servers' cron time zone, e.g. Europe/Berlin; null: the master's

  # salt-run snap.restore: a pick from the backup server's history put back
  # onto a server through Salt, sealed to that server's own snap key.
  restore:
    max_bytes: 268435456    # largest transfer through Salt (256 MiB); bigger: restore from off-site

  # Proof on a schedule (docs/RESTORE.md): the off-site audit daily and the
  # restore drill weekly, on a drill minion that is NOT the backup server.
  # Add the drill key's PUBLIC half to snap:archive:recipients above.
  verify: {}
  #  minion: drill1              # holds the drill key and a read-only identity
  #  master_minion: master       # the master's own minion runs the weekly drill
  #  key: /etc/snap/drill.key    # path of the SECRET drill key on the drill minion, put there out of band
  #  target:                     # a READ-ONLY off-site identity (get, restore, list)
  #    bucket: example-snap-archives
  #    region: eu-west-1
  #    profile: snap-read
  #  prefix: snap/backup1/
  #  max_age_days: 16            # newest archive older than this: flagged
  #  min_retain_days: 90         # an archive locked for less: flagged
  #  max_bytes: 268435456        # drill sample size cap
  #  tier: Bulk                  # Glacier retrieval tier for the drill
  #  audit_schedule: {minute: 30, hour: 6}
  #  drill_schedule: {minute: 0, hour: 7, dayweek: 0}
