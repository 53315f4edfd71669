#!/bin/sh
# The original scripts' archive job (seed 001, "Long Term Secure Backups"):
# a SquashFS image of the whole rsnapshot root, `gpg --encrypt` of it to the
# archive public key (gpg's default compression, as the scripts ran it), an
# upload of the .gpg file, then clean up. mksquashfs gets snap's compressor
# and level so that the comparison is at equal image size.
#
# Environment: HISTORY WORK GNUPGHOME RECIPIENT LEVEL (zstd level), and for
# the upload PYTHON UPLOAD_KEY plus what s3_upload.py reads (S3_*).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mksquashfs "$HISTORY" "$WORK/history.sqfs" -comp zstd -Xcompression-level "$LEVEL" \
    -noappend -no-progress -quiet >/dev/null
gpg --homedir "$GNUPGHOME" --batch --yes --trust-model always --recipient "$RECIPIENT" \
    --output "$WORK/history.sqfs.gpg" --encrypt "$WORK/history.sqfs"
"$PYTHON" "$here/s3_upload.py" --with boto3 "$WORK/history.sqfs.gpg" "$UPLOAD_KEY"
rm -f "$WORK/history.sqfs" "$WORK/history.sqfs.gpg"
