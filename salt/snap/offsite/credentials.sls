# The AWS profile the backup server's upload pipeline uses (docs/OFFSITE.md).
# Secrets come from sdb:// URIs (resolved on the minion), never plaintext pillar;
# with an instance profile or Roles Anywhere there is no static key at all.
{%- set creds = salt['pillar.get']('snap:offsite:credentials', {}) %}
{%- if creds %}
snap-offsite-credentials:
  snap.offsite_credentials:
    - name: {{ creds.get('file', '/etc/snap/aws/credentials') | json }}
    - profile: {{ salt['pillar.get']('snap:offsite:profile', 'snap') | json }}
    - config_file: {{ creds.get('config_file', '/etc/snap/aws/config') | json }}
    - region: {{ salt['pillar.get']('snap:offsite:region') | json }}
{%- for key in ('access_key_id', 'secret_access_key', 'role_arn', 'credential_source', 'web_identity_token_file', 'roles_anywhere') %}
{%- if creds.get(key) %}
    - {{ key }}: {{ creds[key] | json }}
{%- endif %}
{%- endfor %}
{%- endif %}
