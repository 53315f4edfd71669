{#- Example reactor: alert on failed or skipped backups and archives.
    In the master config:

      reactor:
        - 'salt/beacon/*/snap/push/failed':     [salt://reactor/snap-alert.sls]
        - 'salt/beacon/*/snap/push/skipped':    [salt://reactor/snap-alert.sls]
        - 'salt/beacon/*/snap/rotate/failed':   [salt://reactor/snap-alert.sls]
        - 'salt/beacon/*/snap/archive/failed':  [salt://reactor/snap-alert.sls]
        - 'snap/status/suspect':                [salt://reactor/snap-alert.sls]
      snap_alert_command: "mail -s 'snap alert' root"   # gets the event as JSON on stdin

    The beacon (salt://_beacons/snap.py) fires the events; salt-run
    snap.status is the other half: it notices servers that stopped
    reporting at all, and fires snap/status/suspect when the backup server's
    word disagrees with the servers' own records or with off-site. -#}
snap-alert:
  runner.snap.alert:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}
