# Example pillar top file.
base:
  "*":
    - snap
