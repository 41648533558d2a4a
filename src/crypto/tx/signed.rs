//! Payloads signed by an account key: a spec and the Ethereum-style ECDSA signature of its
//! domain-separated digest — the shape of every regionchain system transaction an account
//! signs (servicechain registrations, RN registrations, reward withdrawals). The RLP layout is
//! the spec's fields as a list, then `r`, `s`, `y_parity`.

use super::{recover_digest, sign_digest, Signature, TxError};
use alloy_primitives::{Address, B256, U256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};

/// A spec an account signs.
pub trait Signable: Encodable + Decodable {
    /// The digest the key signs (each kind has its own domain tag).
    fn digest(&self) -> B256;
}

/// `spec` with its account signature.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct AccountSigned<T> {
    pub spec: T,
    pub r: U256,
    pub s: U256,
    pub y_parity: bool,
}

impl<T: Signable> AccountSigned<T> {
    /// `spec` signed with `secret`.
    pub fn sign(spec: T, secret: &[u8; 32]) -> Result<Self, TxError> {
        let sig = sign_digest(secret, spec.digest())?;
        Ok(Self {
            spec,
            r: sig.r(),
            s: sig.s(),
            y_parity: sig.v(),
        })
    }

    /// Whether the signature is valid and made by `account`'s key.
    pub fn is_signed_by(&self, account: Address) -> bool {
        let signature = Signature::new(self.r, self.s, self.y_parity);
        recover_digest(self.spec.digest(), &signature).is_ok_and(|signer| signer == account)
    }
}
