//! JSON-RPC errors: the standard codes, geth's server codes and messages, and the mapping
//! from backend and submission errors. Tools match on these (ethers reads code 3 plus a hex
//! `data` as a revert; "nonce too low" and "insufficient funds" as their own error kinds).

use super::backend::{BackendError, SubmitError};
use super::json::hex_data;
use crate::crypto::tx::TxError;
use crate::exec::revert_reason;
use serde::Serialize;

pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INVALID_PARAMS: i64 = -32602;
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// geth's generic server error: bad nonces, funds, chain ids, missing state.
pub(crate) const SERVER_ERROR: i64 = -32000;
/// A request timed out (geth's code).
pub(crate) const TIMEOUT: i64 = -32002;
/// A response would be too large (geth's code for oversized batch responses).
pub(crate) const RESPONSE_TOO_LARGE: i64 = -32003;
/// A limit of the server was exceeded (EIP-1474).
pub(crate) const LIMIT_EXCEEDED: i64 = -32005;
/// Execution reverted; `data` holds the revert bytes (geth, EIP-1474 extension).
pub(crate) const REVERTED: i64 = 3;

/// One JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// For reverts, the revert bytes as `0x` hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(crate) fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    pub(crate) fn server(message: impl Into<String>) -> Self {
        Self::new(SERVER_ERROR, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    pub(crate) fn method_not_found(method: &str) -> Self {
        Self::new(
            METHOD_NOT_FOUND,
            format!("the method {method} does not exist/is not available"),
        )
    }

    pub(crate) fn timeout() -> Self {
        Self::new(TIMEOUT, "request timed out")
    }

    /// geth's revert error: "execution reverted[: reason]" with the raw revert data.
    pub(crate) fn reverted(output: &[u8]) -> Self {
        let message = match revert_reason(output) {
            Some(reason) => format!("execution reverted: {reason}"),
            None => "execution reverted".to_string(),
        };
        Self {
            code: REVERTED,
            message,
            data: Some(hex_data(output)),
        }
    }
}

impl From<BackendError> for RpcError {
    fn from(e: BackendError) -> Self {
        let message = e.to_string();
        match e {
            BackendError::Reverted { output } => Self::reverted(&output),
            BackendError::HistoricalState
            | BackendError::HistoryPruned { .. }
            | BackendError::UnknownBlock
            | BackendError::Execution(_) => Self::server(message),
            BackendError::InvalidParams(_) => Self::invalid_params(message),
            BackendError::LimitExceeded(_) => Self::new(LIMIT_EXCEEDED, message),
            BackendError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<SubmitError> for RpcError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Unavailable(_) => Self::internal(e.to_string()),
            _ => Self::server(e.to_string()),
        }
    }
}

impl From<TxError> for RpcError {
    fn from(e: TxError) -> Self {
        match e {
            // geth's wording, which tools recognise.
            TxError::MissingChainId => {
                Self::server("only replay-protected (EIP-155) transactions allowed over RPC")
            }
            TxError::Oversize { .. } => Self::server("oversized data"),
            other => Self::server(format!("invalid transaction: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Solidity's `revert("<reason>")` payload.
    fn error_string(reason: &str) -> Vec<u8> {
        let mut out = vec![0x08, 0xc3, 0x79, 0xa0];
        let mut word = [0u8; 32];
        word[31] = 32;
        out.extend_from_slice(&word);
        word = [0u8; 32];
        word[24..].copy_from_slice(&(reason.len() as u64).to_be_bytes());
        out.extend_from_slice(&word);
        let mut text = reason.as_bytes().to_vec();
        text.resize(reason.len().div_ceil(32) * 32, 0);
        out.extend_from_slice(&text);
        out
    }

    #[test]
    fn reverted_carries_the_reason_and_the_raw_data() {
        let data = error_string("not owner");
        let e = RpcError::reverted(&data);
        assert_eq!(e.code, 3);
        assert_eq!(e.message, "execution reverted: not owner");
        assert_eq!(e.data, Some(hex_data(&data)));
    }

    #[test]
    fn reverted_without_a_reason_says_so_and_keeps_the_data() {
        let mut cut = error_string("abc");
        cut.truncate(40);
        assert_eq!(RpcError::reverted(&cut).message, "execution reverted");
        let e = RpcError::reverted(&[]);
        assert_eq!(e.message, "execution reverted");
        assert_eq!(e.data.as_deref(), Some("0x"));
    }
}
