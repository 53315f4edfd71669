"""Real GnuPG 2.2 with a throwaway home: the offline archive key, generated
by gpg itself; decryption with `gpg --decrypt` to prove others can read what
snap writes."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile


class GnuPG:
    def __init__(self, uid="snap archive key <archive@snap.invalid>", algo="rsa3072"):
        self.home = pathlib.Path(tempfile.mkdtemp(prefix="snap-gnupg-"))
        self.home.chmod(0o700)
        self.uid = uid
        self.algo = algo
        self.fingerprint = None

    def gpg(self, *args, input=None, check=True):
        proc = subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode", "loopback",
             "--passphrase", "", *args],
            input=input, capture_output=True,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"gpg {args} failed: {proc.stderr.decode(errors='replace')}")
        return proc

    def __enter__(self):
        # A certification-only primary and an encryption subkey, as an
        # offline archive key would be made.
        self.gpg("--quick-gen-key", self.uid, self.algo, "cert", "never")
        out = self.gpg("--with-colons", "--list-secret-keys").stdout.decode()
        self.fingerprint = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        self.gpg("--quick-add-key", self.fingerprint, self.algo, "encr", "never")
        return self

    def __exit__(self, *exc):
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def export_public(self, path: os.PathLike, armor=True) -> pathlib.Path:
        args = ["--armor"] if armor else []
        pathlib.Path(path).write_bytes(self.gpg(*args, "--export", self.fingerprint).stdout)
        return pathlib.Path(path)

    def export_secret(self, path: os.PathLike, armor=True) -> pathlib.Path:
        args = ["--armor"] if armor else []
        pathlib.Path(path).write_bytes(self.gpg(*args, "--export-secret-keys", self.fingerprint).stdout)
        return pathlib.Path(path)

    def decrypt(self, src: os.PathLike, dst: os.PathLike):
        return self.gpg("--output", str(dst), "--decrypt", str(src))
