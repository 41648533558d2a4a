#!/usr/bin/env python3
"""Generates fixtures.json: Ethereum transactions signed by eth-account (web3.py's signer).

Run once; the output is committed and the Rust tests only read it:

    python3 -m venv /var/tmp/kaon-ethvenv
    /var/tmp/kaon-ethvenv/bin/pip install eth-account==0.14.0
    /var/tmp/kaon-ethvenv/bin/python tests/vectors/tx/generate.py

Everything is deterministic (fixed keys, RFC 6979 nonces), so a rerun reproduces the file.
"""

import json
import os
from importlib.metadata import version

from eth_account import Account
from eth_utils import keccak, to_checksum_address


def key(i: int) -> bytes:
    """A fixed secret key: keccak("kaon tx fixture key <i>") (below the curve order whp)."""
    return keccak(text=f"kaon tx fixture key {i}")


def data(n: int, seed: int) -> bytes:
    """`n` deterministic bytes, with zeros and 0x80..0xff mixed in to exercise RLP."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += keccak(f"kaon tx fixture data {seed} {counter}".encode())
        counter += 1
    return bytes(out[:n])


ADDR_A = "0x3535353535353535353535353535353535353535"
ADDR_B = to_checksum_address(keccak(text="kaon fixture callee")[12:])
SLOT = lambda i: "0x" + keccak(text=f"slot {i}").hex()
GWEI = 10**9
ETHER = 10**18

CASES = [
    # (name, key index, transaction dict)
    ("legacy_eip155_transfer_chain1", 1, dict(
        nonce=9, gasPrice=20 * GWEI, gas=21000, to=ADDR_A, value=ETHER, data=b"", chainId=1)),
    ("legacy_eip155_call_chain1001", 2, dict(
        nonce=0, gasPrice=25 * GWEI, gas=100_000, to=ADDR_B, value=0,
        data=bytes.fromhex("a9059cbb") + bytes(12) + bytes.fromhex(ADDR_A[2:]) + (10**6).to_bytes(32, "big"),
        chainId=1001)),
    ("legacy_eip155_create_chain31337", 3, dict(
        nonce=1, gasPrice=1, gas=3_000_000, to=b"", value=0, data=data(600, 1), chainId=31337)),
    ("legacy_eip155_big_chain_id", 4, dict(
        nonce=2**32, gasPrice=2**100, gas=2**40, to=ADDR_B, value=2**200, data=b"\x00", chainId=2**53 - 1)),
    ("legacy_unprotected_pre_eip155", 5, dict(
        nonce=3, gasPrice=GWEI, gas=21000, to=ADDR_A, value=7, data=b"")),
    ("eip2930_access_list_chain8217", 6, dict(
        type=1, chainId=8217, nonce=5, gasPrice=50 * GWEI, gas=60_000, to=ADDR_B, value=12345,
        data=data(68, 2),
        accessList=[
            dict(address=ADDR_B, storageKeys=[SLOT(0), SLOT(1), SLOT(2)]),
            dict(address=ADDR_A, storageKeys=[]),
        ])),
    ("eip2930_empty_access_list_create", 7, dict(
        type=1, chainId=1, nonce=0, gasPrice=GWEI, gas=500_000, to=b"", value=0,
        data=data(200, 3), accessList=[])),
    ("eip1559_transfer_chain1", 8, dict(
        type=2, chainId=1, nonce=42, maxPriorityFeePerGas=2 * GWEI, maxFeePerGas=100 * GWEI,
        gas=21000, to=ADDR_A, value=ETHER // 10, data=b"", accessList=[])),
    ("eip1559_access_list_call_chain_2p32", 9, dict(
        type=2, chainId=2**32 + 7, nonce=7, maxPriorityFeePerGas=1, maxFeePerGas=10**12,
        gas=250_000, to=ADDR_B, value=0, data=data(1000, 4),
        accessList=[dict(address=ADDR_A, storageKeys=[SLOT(3)])])),
    ("eip1559_create_max_initcode", 10, dict(
        type=2, chainId=1001, nonce=1, maxPriorityFeePerGas=GWEI, maxFeePerGas=30 * GWEI,
        gas=15_000_000, to=b"", value=0, data=data(49152, 5), accessList=[])),
    ("eip1559_zero_fields", 11, dict(
        type=2, chainId=1, nonce=0, maxPriorityFeePerGas=0, maxFeePerGas=0, gas=0, to=ADDR_A,
        value=0, data=b"", accessList=[])),
    ("eip1559_large_values", 12, dict(
        type=2, chainId=8217, nonce=2**64 - 2, maxPriorityFeePerGas=2**127, maxFeePerGas=2**128 - 1,
        gas=2**63, to=ADDR_B, value=2**256 - 1, data=b"\x80\xff", accessList=[])),
]


def hexstr(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def dec(n):
    return None if n is None else str(n)


def main() -> None:
    fixtures = []
    for name, key_index, tx in CASES:
        secret = key(key_index)
        signed = Account.sign_transaction(tx, secret)
        raw = bytes(signed.raw_transaction)
        ty = tx.get("type", 0)
        to = tx["to"]
        fixtures.append({
            "name": name,
            "secret_key": hexstr(secret),
            "raw": hexstr(raw),
            "hash": hexstr(signed.hash),
            "sender": Account.from_key(secret).address,
            "type": ty,
            "chain_id": tx.get("chainId"),
            "nonce": tx["nonce"],
            "gas_limit": tx["gas"],
            # Fees and value as decimal strings: they exceed what JSON numbers carry exactly.
            "gas_price": dec(tx.get("gasPrice")),
            "max_fee_per_gas": dec(tx.get("maxFeePerGas")),
            "max_priority_fee_per_gas": dec(tx.get("maxPriorityFeePerGas")),
            "to": None if to == b"" else to,
            "value": dec(tx["value"]),
            "input": hexstr(tx["data"]),
            "access_list": tx.get("accessList"),
            "v": signed.v,
            "r": hex(signed.r),
            "s": hex(signed.s),
        })
    out = {
        "generator": "tests/vectors/tx/generate.py",
        "library": f"eth-account {version('eth-account')} (eth-keys {version('eth-keys')})",
        "fixtures": fixtures,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(fixtures)} fixtures to {path}")


if __name__ == "__main__":
    main()
