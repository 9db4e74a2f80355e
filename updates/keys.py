"""The repository's signing keys: one ed25519 key per TUF role, encrypted with its passphrase.

Each key is a JSON file ``<keys_dir>/<role>.json`` (owner-only, 0600, in a 0700 directory, never
under the served repository). The private key is sealed with AES-256-GCM under a key derived
from the passphrase by scrypt (N=2^15, r=8, p=1: go-tuf's parameters, which fleetctl uses), with
the role and public key bound in as associated data so that files cannot be swapped between roles
unnoticed. The public key and key id stay readable without the passphrase, so ``roots`` and
``list`` need none.

Why not a PEM with ``BestAvailableEncryption``: for PKCS#8 it derives the key with 2,048 rounds
of PBKDF2, which makes a stolen key file cheap to brute-force; scrypt costs an attacker about
10,000 times more per guess at 80 ms for us.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from securesystemslib.signer import CryptoSigner, SSlibKey

ROLES = ("root", "targets", "snapshot", "timestamp")
DEFAULT_SCRYPT_N = 2**15
_MAX_SCRYPT_N = 2**20  # a key file asking for more is refused rather than eating the memory
_FORMAT = "fleet-django-tuf-key/1"


class KeyFileError(Exception):
    """Base of the key problems a command reports to the operator."""


class KeyMissing(KeyFileError):
    pass


class WrongPassphrase(KeyFileError):
    def __init__(self, message: str, role: str = "") -> None:
        super().__init__(message)
        self.role = role


def key_file(keys_dir: Path, role: str) -> Path:
    return Path(keys_dir) / f"{role}.json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _associated_data(role: str, public_hex: str) -> bytes:
    return f"{_FORMAT}:{role}:{public_hex}".encode()


def _public_hex(private_key: Ed25519PrivateKey) -> str:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_of(private_key: Ed25519PrivateKey) -> SSlibKey:
    """The TUF public key (its key id is the SHA-256 of its canonical JSON, as go-tuf computes it
    for keys without ``keyid_hash_algorithms``)."""
    return SSlibKey.from_crypto(private_key.public_key())


def ensure_keys_dir(keys_dir: Path) -> Path:
    """Create the directory owner-only (and tighten it if it exists)."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    return keys_dir


def write_key(
    keys_dir: Path,
    role: str,
    private_key: Ed25519PrivateKey,
    passphrase: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    replace: bool = False,
) -> SSlibKey:
    """Seal ``private_key`` with ``passphrase`` into ``<keys_dir>/<role>.json`` (0600).

    A new key never overwrites an existing file (``replace`` is for re-sealing the same key
    under a new passphrase, which goes through a temporary file and an atomic rename).
    """
    if not passphrase:
        raise WrongPassphrase(f"the {role} passphrase must not be empty", role)
    ensure_keys_dir(keys_dir)
    public_hex = _public_hex(private_key)
    salt, nonce = os.urandom(16), os.urandom(12)
    secret = _derive(passphrase, salt, scrypt_n, 8, 1)
    raw = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    sealed = AESGCM(secret).encrypt(nonce, raw, _associated_data(role, public_hex))
    public = public_of(private_key)
    document = {
        "format": _FORMAT,
        "role": role,
        "keyid": public.keyid,
        "keytype": public.keytype,
        "scheme": public.scheme,
        "public": public_hex,
        "kdf": {"name": "scrypt", "n": scrypt_n, "r": 8, "p": 1, "salt": _b64(salt)},
        "cipher": {"name": "aes-256-gcm", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    data = json.dumps(document, indent=1).encode()
    path = key_file(keys_dir, role)
    target = path.with_suffix(".json.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if replace:
        os.replace(target, path)
    return public


def _read(keys_dir: Path, role: str) -> dict:
    path = key_file(keys_dir, role)
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeyMissing(f"no {role} key in {keys_dir} (run `manage.py updates init` first)") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the {role} key file {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT or document.get("role") != role:
        raise KeyFileError(f"{path} is not a {role} key written by `manage.py updates`")
    return document


def public_key(keys_dir: Path, role: str) -> SSlibKey:
    """The role's public key, read without its passphrase."""
    document = _read(keys_dir, role)
    keyval = {"public": document["public"]}
    return SSlibKey(document["keyid"], document["keytype"], document["scheme"], keyval)


def load_private_key(keys_dir: Path, role: str, passphrase: str) -> Ed25519PrivateKey:
    document = _read(keys_dir, role)
    try:
        kdf, cipher = document["kdf"], document["cipher"]
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if kdf["name"] != "scrypt" or cipher["name"] != "aes-256-gcm" or not 2 <= n <= _MAX_SCRYPT_N:
            raise ValueError("unsupported key encryption")
        secret = _derive(passphrase, _unb64(kdf["salt"]), n, r, p)
        raw = AESGCM(secret).decrypt(
            _unb64(cipher["nonce"]),
            _unb64(document["ciphertext"]),
            _associated_data(role, document["public"]),
        )
    except InvalidTag:
        raise WrongPassphrase(f"wrong {role} passphrase", role) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"the {role} key file is damaged: {exc}") from None
    private_key = Ed25519PrivateKey.from_private_bytes(raw)
    if _public_hex(private_key) != document["public"]:
        raise KeyFileError(f"the {role} key file is damaged: its public key does not match")
    return private_key


def load_signer(keys_dir: Path, role: str, passphrase: str) -> CryptoSigner:
    """A signer for the role, or ``WrongPassphrase`` / ``KeyMissing``."""
    private_key = load_private_key(keys_dir, role, passphrase)
    return CryptoSigner(private_key, public_of(private_key))


def change_passphrase(
    keys_dir: Path, role: str, old: str, new: str, *, scrypt_n: int = DEFAULT_SCRYPT_N
) -> None:
    """Re-seal the role's key under a new passphrase (the key, and so the metadata, stay the same)."""
    private_key = load_private_key(keys_dir, role, old)
    write_key(keys_dir, role, private_key, new, scrypt_n=scrypt_n, replace=True)
