# Example top file: every server gets snap.
base:
  "*":
    - snap
