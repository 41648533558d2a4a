//! The signed envelope (EIP-2718): strict decoding of raw bytes with explicit limits, and the
//! one encoding that every decoded transaction re-encodes to.

use alloy_primitives::{keccak256, uint, Address, Bytes, B256, U256};
use alloy_rlp::{Decodable, Encodable, Header, EMPTY_LIST_CODE};

use super::transaction::{Eip1559Tx, Eip2930Tx, LegacyTx, Transaction, TxKind, TxType};
use super::{TxError, MAX_TX_BYTES};
use crate::types::ChainId;

/// Order of the secp256k1 group: `r` and `s` must lie in `[1, n)`.
const SECP256K1_N: U256 =
    uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);
/// `n / 2`: EIP-2 accepts only `s <= n/2`, so that `(r, n - s)` is not a second valid
/// signature of the same transaction under a different hash.
const SECP256K1_HALF_N: U256 =
    uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

/// Legacy `v` of an unprotected signature with even y (`v = 27 + y_parity`).
const LEGACY_V_BASE: u64 = 27;
/// EIP-155 `v = chain_id * 2 + 35 + y_parity`.
const EIP155_V_BASE: u64 = 35;

/// What [`SignedTransaction::decode_with`] accepts beyond the wire format itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRules {
    /// Largest raw transaction accepted, in bytes.
    pub max_bytes: usize,
    /// Accept legacy transactions without EIP-155 replay protection. Off by default: Kaon's
    /// chain ids name servicechains, and an unprotected signature is valid on every one of
    /// them (geth's `--rpc.allow-unprotected-txs` is the same switch).
    pub allow_unprotected_legacy: bool,
}

impl Default for DecodeRules {
    fn default() -> Self {
        Self {
            max_bytes: MAX_TX_BYTES,
            allow_unprotected_legacy: false,
        }
    }
}

/// An ECDSA signature as transactions carry it (alloy's): `y_parity` (`v()`) selects which of
/// the two curve points with x-coordinate `r` signed.
pub use alloy_primitives::Signature;

/// The checks on a signature that need no curve arithmetic: `r` and `s` in `[1, n)` and
/// `s <= n/2` (EIP-2's low-s rule).
pub fn check_signature(signature: &Signature) -> Result<(), TxError> {
    let in_range = |x: U256| !x.is_zero() && x < SECP256K1_N;
    if !in_range(signature.r()) || !in_range(signature.s()) {
        return Err(TxError::SignatureOutOfRange);
    }
    if signature.s() > SECP256K1_HALF_N {
        return Err(TxError::HighS);
    }
    Ok(())
}

/// A transaction with its signature, its raw envelope and its hash. It exists only in a
/// consistent state: built by [`Self::decode`] or [`Self::new`], the raw bytes are the one
/// encoding of the fields and the hash is their keccak-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    tx: Transaction,
    signature: Signature,
    hash: B256,
    raw: Bytes,
}

impl SignedTransaction {
    /// Decodes a raw envelope (as `eth_sendRawTransaction` receives it) under the default
    /// [`DecodeRules`]: at most [`MAX_TX_BYTES`], EIP-155 required for legacy.
    pub fn decode(raw: &[u8]) -> Result<Self, TxError> {
        Self::decode_with(raw, &DecodeRules::default())
    }

    /// Decodes a raw envelope under `rules`.
    pub fn decode_with(raw: &[u8], rules: &DecodeRules) -> Result<Self, TxError> {
        check_size(raw.len(), rules)?;
        Self::decode_bytes(Bytes::copy_from_slice(raw), rules)
    }

    /// Decodes a raw envelope the caller already owns; the transaction's input shares the
    /// buffer instead of copying it.
    pub fn decode_bytes(raw: Bytes, rules: &DecodeRules) -> Result<Self, TxError> {
        check_size(raw.len(), rules)?;
        let (tx, signature) = match raw[0] {
            0x01 => decode_eip2930(&raw)?,
            0x02 => decode_eip1559(&raw)?,
            EMPTY_LIST_CODE.. => decode_legacy(&raw, rules)?,
            byte @ 0x80..=0xbf => return Err(TxError::NotAnEnvelope(byte)),
            byte => return Err(TxError::UnsupportedType(byte)),
        };
        check_signature(&signature)?;
        let hash = keccak256(&raw);
        Ok(Self {
            tx,
            signature,
            hash,
            raw,
        })
    }

    /// Signs nothing: joins a transaction and an existing signature, encoding the envelope.
    /// Unprotected legacy transactions are allowed here (decoding is where the rule applies).
    pub fn new(tx: Transaction, signature: Signature) -> Result<Self, TxError> {
        check_signature(&signature)?;
        let v = match &tx {
            Transaction::Legacy(LegacyTx {
                chain_id: Some(chain_id),
                ..
            }) => chain_id
                .get()
                .checked_mul(2)
                .and_then(|v| v.checked_add(EIP155_V_BASE + u64::from(signature.v())))
                .ok_or(TxError::ChainIdTooLarge(chain_id.get()))?,
            Transaction::Legacy(LegacyTx { chain_id: None, .. }) => {
                LEGACY_V_BASE + u64::from(signature.v())
            }
            _ => u64::from(signature.v()),
        };
        let payload_length =
            tx.fields_len() + v.length() + signature.r().length() + signature.s().length();
        let header = Header {
            list: true,
            payload_length,
        };
        let mut out = Vec::with_capacity(tx.type_prefix_len() + header.length_with_payload());
        if let Some(ty) = tx.tx_type().type_byte() {
            out.push(ty);
        }
        header.encode(&mut out);
        tx.encode_fields(&mut out);
        v.encode(&mut out);
        signature.r().encode(&mut out);
        signature.s().encode(&mut out);
        let hash = keccak256(&out);
        Ok(Self {
            tx,
            signature,
            hash,
            raw: out.into(),
        })
    }

    pub const fn tx(&self) -> &Transaction {
        &self.tx
    }

    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Transaction hash: keccak-256 of the raw envelope, as Ethereum tooling computes it.
    pub const fn hash(&self) -> B256 {
        self.hash
    }

    /// The raw envelope: exactly the decoded bytes.
    pub const fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The raw envelope (a reference-counted handle, no copy).
    pub fn encode(&self) -> Bytes {
        self.raw.clone()
    }

    pub fn encoded_len(&self) -> usize {
        self.raw.len()
    }

    pub fn into_tx(self) -> Transaction {
        self.tx
    }

    pub const fn tx_type(&self) -> TxType {
        self.tx.tx_type()
    }

    pub const fn chain_id(&self) -> Option<ChainId> {
        self.tx.chain_id()
    }

    pub const fn nonce(&self) -> u64 {
        self.tx.nonce()
    }

    pub const fn gas_limit(&self) -> u64 {
        self.tx.gas_limit()
    }

    pub const fn value(&self) -> U256 {
        self.tx.value()
    }

    pub const fn to(&self) -> Option<Address> {
        self.tx.to()
    }

    pub const fn input(&self) -> &Bytes {
        self.tx.input()
    }

    /// See [`Transaction::signing_hash`].
    pub fn signing_hash(&self) -> B256 {
        self.tx.signing_hash()
    }
}

fn check_size(len: usize, rules: &DecodeRules) -> Result<(), TxError> {
    if len == 0 {
        return Err(TxError::Empty);
    }
    if len > rules.max_bytes {
        return Err(TxError::Oversize {
            len,
            max: rules.max_bytes,
        });
    }
    Ok(())
}

/// Reads fields one by one out of a transaction's RLP list, naming the field in errors.
struct Fields<'a> {
    /// The whole envelope, so that `input` can share its buffer.
    raw: &'a Bytes,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Opens the list that starts `buf`, which must end exactly where the list ends.
    fn open(raw: &'a Bytes, mut buf: &'a [u8]) -> Result<Self, TxError> {
        let rest = Header::decode_bytes(&mut buf, true).map_err(|source| TxError::Rlp {
            field: "transaction list",
            source,
        })?;
        if !buf.is_empty() {
            return Err(TxError::TrailingBytes(buf.len()));
        }
        Ok(Self { raw, rest })
    }

    fn next<T: Decodable>(&mut self, field: &'static str) -> Result<T, TxError> {
        T::decode(&mut self.rest).map_err(|source| TxError::Rlp { field, source })
    }

    fn input(&mut self) -> Result<Bytes, TxError> {
        let bytes = Header::decode_bytes(&mut self.rest, false).map_err(|source| TxError::Rlp {
            field: "input",
            source,
        })?;
        // `bytes` points into `raw` (`rest` was cut from it), which is what `slice_ref` needs.
        Ok(Bytes(self.raw.0.slice_ref(bytes)))
    }

    fn kind(&mut self) -> Result<TxKind, TxError> {
        self.next("to")
    }

    fn finish(self) -> Result<(), TxError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(TxError::ExtraFields(self.rest.len()))
        }
    }
}

fn decode_legacy(raw: &Bytes, rules: &DecodeRules) -> Result<(Transaction, Signature), TxError> {
    let mut f = Fields::open(raw, raw)?;
    let nonce = f.next("nonce")?;
    let gas_price = f.next("gas_price")?;
    let gas_limit = f.next("gas_limit")?;
    let to = f.kind()?;
    let value = f.next("value")?;
    let input = f.input()?;
    let v: u64 = f.next("v")?;
    let r = f.next("r")?;
    let s = f.next("s")?;
    f.finish()?;

    let (chain_id, y_parity) = match v {
        LEGACY_V_BASE | 28 => (None, v == LEGACY_V_BASE + 1),
        EIP155_V_BASE.. => {
            let k = v - EIP155_V_BASE;
            (Some(ChainId(k / 2)), k % 2 == 1)
        }
        _ => return Err(TxError::InvalidV(v)),
    };
    if chain_id.is_none() && !rules.allow_unprotected_legacy {
        return Err(TxError::MissingChainId);
    }
    let tx = LegacyTx {
        chain_id,
        nonce,
        gas_price,
        gas_limit,
        to,
        value,
        input,
    };
    Ok((tx.into(), Signature::new(r, s, y_parity)))
}

fn decode_eip2930(raw: &Bytes) -> Result<(Transaction, Signature), TxError> {
    let mut f = Fields::open(raw, &raw[1..])?;
    let tx = Eip2930Tx {
        chain_id: f.next("chain_id")?,
        nonce: f.next("nonce")?,
        gas_price: f.next("gas_price")?,
        gas_limit: f.next("gas_limit")?,
        to: f.kind()?,
        value: f.next("value")?,
        input: f.input()?,
        access_list: f.next("access_list")?,
    };
    Ok((tx.into(), typed_signature(f)?))
}

fn decode_eip1559(raw: &Bytes) -> Result<(Transaction, Signature), TxError> {
    let mut f = Fields::open(raw, &raw[1..])?;
    let tx = Eip1559Tx {
        chain_id: f.next("chain_id")?,
        nonce: f.next("nonce")?,
        max_priority_fee_per_gas: f.next("max_priority_fee_per_gas")?,
        max_fee_per_gas: f.next("max_fee_per_gas")?,
        gas_limit: f.next("gas_limit")?,
        to: f.kind()?,
        value: f.next("value")?,
        input: f.input()?,
        access_list: f.next("access_list")?,
    };
    Ok((tx.into(), typed_signature(f)?))
}

/// The `y_parity, r, s` that end every typed transaction's list.
fn typed_signature(mut f: Fields<'_>) -> Result<Signature, TxError> {
    let y_parity = match f.next::<u64>("y_parity")? {
        0 => false,
        1 => true,
        other => return Err(TxError::InvalidYParity(other)),
    };
    let r = f.next("r")?;
    let s = f.next("s")?;
    f.finish()?;
    Ok(Signature::new(r, s, y_parity))
}
