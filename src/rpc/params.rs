//! Method parameters: positional arrays with bounded length, and the Ethereum argument types
//! (quantities, block tags and EIP-1898 block ids, call objects, log filters), parsed the way
//! geth and the tools agree on, with geth's error messages.

use super::backend::LogFilter;
use super::error::RpcError;
use super::jsonrpc::{bounded_array, SeqError};
use alloy_primitives::{Address, Bytes, B256, U256};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Most topic positions a filter may have (an event has at most 4 indexed topics).
pub(crate) const MAX_TOPICS: usize = 4;
/// Most addresses, or alternatives in one topic position, of a log filter (geth's limits).
pub(crate) const MAX_FILTER_ALTERNATIVES: usize = 1000;

/// The positional parameters of one call.
pub(crate) struct Params<'a> {
    items: Vec<&'a RawValue>,
}

impl<'a> Params<'a> {
    /// Splits `raw` (absent, `null` or an array) into at most `max` arguments.
    pub(crate) fn parse(raw: Option<&'a RawValue>, max: usize) -> Result<Self, RpcError> {
        let Some(raw) = raw.filter(|r| r.get() != "null") else {
            return Ok(Self { items: Vec::new() });
        };
        if !raw.get().trim_start().starts_with('[') {
            return Err(RpcError::invalid_params("non-array args"));
        }
        let items = bounded_array(raw.get(), max).map_err(|e| match e {
            SeqError::TooLong => {
                RpcError::invalid_params(format!("too many arguments, want at most {max}"))
            }
            SeqError::Json(e) => RpcError::invalid_params(e.to_string()),
        })?;
        Ok(Self { items })
    }

    /// Argument `i`, which must be present and not `null`.
    pub(crate) fn required<T: DeserializeOwned>(&self, i: usize) -> Result<T, RpcError> {
        self.optional(i)?.ok_or_else(|| {
            RpcError::invalid_params(format!("missing value for required argument {i}"))
        })
    }

    /// Argument `i`, `None` when absent or `null`.
    pub(crate) fn optional<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>, RpcError> {
        match self.items.get(i) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| RpcError::invalid_params(format!("invalid argument {i}: {e}"))),
        }
    }

    /// Whether argument `i` is present and not `null`.
    pub(crate) fn has(&self, i: usize) -> bool {
        self.items.get(i).is_some_and(|raw| raw.get() != "null")
    }
}

/// Parses a hex quantity: `0x` followed by at least one hex digit (leading zeros tolerated,
/// since some tools send them), at most 32 significant digits.
fn parse_quantity(s: &str) -> Result<u128, String> {
    u128::from_str_radix(significant_hex(s, 128)?, 16)
        .map_err(|_| format!("invalid hex number {s:?}"))
}

/// The significant hex digits of a quantity of at most `bits` bits (`"0"` for zero): `0x`
/// followed by at least one digit, leading zeros tolerated.
fn significant_hex(s: &str, bits: usize) -> Result<&str, String> {
    let digits = hex_digits(s)?;
    if digits.is_empty() {
        return Err("hex string \"0x\"".to_string());
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > bits / 4 {
        return Err(format!("hex number > {bits} bits"));
    }
    Ok(if significant.is_empty() {
        "0"
    } else {
        significant
    })
}

fn hex_digits(s: &str) -> Result<&str, String> {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| "hex string without 0x prefix".to_string())
}

/// A hex quantity that fits in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct U64Arg(pub u64);

impl<'de> Deserialize<'de> for U64Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_quantity(&s).map_err(D::Error::custom)?;
        u64::try_from(v)
            .map(Self)
            .map_err(|_| D::Error::custom("hex number > 64 bits"))
    }
}

/// A hex quantity that fits in 128 bits (gas prices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct U128Arg(pub u128);

impl<'de> Deserialize<'de> for U128Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_quantity(&s).map(Self).map_err(D::Error::custom)
    }
}

/// A 256-bit hex quantity (values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct U256Arg(pub U256);

impl<'de> Deserialize<'de> for U256Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_u256(&s).map(Self).map_err(D::Error::custom)
    }
}

fn parse_u256(s: &str) -> Result<U256, String> {
    U256::from_str_radix(significant_hex(s, 256)?, 16)
        .map_err(|_| format!("invalid hex number {s:?}"))
}

/// A count that tools send either as a hex quantity or as a JSON number (web3.py sends
/// `eth_feeHistory`'s block count as a number; geth accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CountArg(pub u64);

impl<'de> Deserialize<'de> for CountArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(s) if s.starts_with("0x") || s.starts_with("0X") => {
                let v = parse_quantity(&s).map_err(D::Error::custom)?;
                u64::try_from(v)
                    .map(Self)
                    .map_err(|_| D::Error::custom("hex number > 64 bits"))
            }
            Raw::Text(s) => s
                .parse()
                .map(Self)
                .map_err(|_| D::Error::custom(format!("invalid count {s:?}"))),
        }
    }
}

/// A storage slot: a quantity or 32-byte data, left-padded to 32 bytes (geth accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotArg(pub B256);

impl<'de> Deserialize<'de> for SlotArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_u256(&s).map_err(D::Error::custom)?;
        Ok(Self(B256::from(v)))
    }
}

/// A block named by tag or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockTag {
    Latest,
    Earliest,
    Pending,
    Safe,
    Finalized,
    Number(u64),
}

impl BlockTag {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "latest" => Self::Latest,
            "earliest" => Self::Earliest,
            "pending" => Self::Pending,
            "safe" => Self::Safe,
            "finalized" => Self::Finalized,
            _ => {
                let n = parse_quantity(s)?;
                Self::Number(u64::try_from(n).map_err(|_| "block number > 64 bits")?)
            }
        })
    }
}

impl<'de> Deserialize<'de> for BlockTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(D::Error::custom)
    }
}

/// A block named by tag, number or hash (EIP-1898 objects included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockId {
    Tag(BlockTag),
    Hash(B256),
}

impl<'de> Deserialize<'de> for BlockId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Eip1898 {
            block_number: Option<BlockTag>,
            block_hash: Option<B256>,
            // Kaon never reorganises: every known block is canonical.
            #[serde(default)]
            #[allow(dead_code)]
            require_canonical: bool,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Object(Eip1898),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => BlockTag::parse(&s).map(Self::Tag).map_err(D::Error::custom),
            Raw::Object(o) => match (o.block_number, o.block_hash) {
                (Some(tag), None) => Ok(Self::Tag(tag)),
                (None, Some(hash)) => Ok(Self::Hash(hash)),
                _ => Err(D::Error::custom(
                    "exactly one of blockNumber and blockHash is required",
                )),
            },
        }
    }
}

/// The transaction object of `eth_call` / `eth_estimateGas` as tools send it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallArgs {
    pub from: Option<Address>,
    pub to: Option<Address>,
    pub gas: Option<U64Arg>,
    pub gas_price: Option<U128Arg>,
    pub max_fee_per_gas: Option<U128Arg>,
    pub max_priority_fee_per_gas: Option<U128Arg>,
    pub value: Option<U256Arg>,
    pub data: Option<Bytes>,
    pub input: Option<Bytes>,
    pub nonce: Option<U64Arg>,
    pub chain_id: Option<U64Arg>,
    pub access_list: Option<Vec<AccessListArg>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessListArg {
    pub address: Address,
    #[serde(default)]
    pub storage_keys: Vec<B256>,
}

impl CallArgs {
    /// The call data: `input`, or the older `data`; both only if equal (geth's rule).
    pub(crate) fn call_data(&self) -> Result<Bytes, RpcError> {
        match (&self.input, &self.data) {
            (Some(i), Some(d)) if i != d => Err(RpcError::invalid_params(
                "both \"data\" and \"input\" are set and not equal. Please use \"input\" to pass transaction call data",
            )),
            (Some(i), _) => Ok(i.clone()),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => Ok(Bytes::new()),
        }
    }

    pub(crate) fn access_list(&self) -> crate::crypto::tx::AccessList {
        crate::crypto::tx::AccessList(
            self.access_list
                .iter()
                .flatten()
                .map(|a| crate::crypto::tx::AccessListItem {
                    address: a.address,
                    storage_keys: a.storage_keys.clone(),
                })
                .collect(),
        )
    }
}

/// An address or a list of addresses (`eth_getLogs`' `address`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(x) => vec![x],
            Self::Many(v) => v,
        }
    }
}

/// The filter object of `eth_getLogs` and of `logs` subscriptions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilterArgs {
    pub from_block: Option<BlockTag>,
    pub to_block: Option<BlockTag>,
    pub block_hash: Option<B256>,
    pub address: Option<OneOrMany<Address>>,
    pub topics: Option<Vec<Option<OneOrMany<Option<B256>>>>>,
}

impl FilterArgs {
    /// The address and topic criteria, checked against the filter limits.
    pub(crate) fn log_filter(&self) -> Result<LogFilter, RpcError> {
        let addresses = self
            .address
            .clone()
            .map_or_else(Vec::new, OneOrMany::into_vec);
        if addresses.len() > MAX_FILTER_ALTERNATIVES {
            return Err(RpcError::invalid_params(format!(
                "too many addresses: {}, the limit is {MAX_FILTER_ALTERNATIVES}",
                addresses.len()
            )));
        }
        let positions = self.topics.clone().unwrap_or_default();
        if positions.len() > MAX_TOPICS {
            return Err(RpcError::invalid_params("too many topics"));
        }
        let topics = positions
            .into_iter()
            .map(|position| {
                let alternatives = position.map(OneOrMany::into_vec).unwrap_or_default();
                if alternatives.len() > MAX_FILTER_ALTERNATIVES {
                    return Err(RpcError::invalid_params("too many topic alternatives"));
                }
                // A null among the alternatives matches anything (geth's reading).
                Ok(alternatives
                    .into_iter()
                    .collect::<Option<Vec<B256>>>()
                    .filter(|list| !list.is_empty()))
            })
            .collect::<Result<_, _>>()?;
        Ok(LogFilter { addresses, topics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: DeserializeOwned>(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn quantities_need_a_prefix_and_fit() {
        assert_eq!(parse::<U64Arg>("\"0x0\""), Ok(U64Arg(0)));
        assert_eq!(parse::<U64Arg>("\"0x00ff\""), Ok(U64Arg(255)));
        assert!(parse::<U64Arg>("\"ff\"").is_err());
        assert!(parse::<U64Arg>("\"0x\"").is_err());
        assert!(parse::<U64Arg>("\"0x10000000000000000\"").is_err());
        assert!(parse::<U64Arg>("\"0xzz\"").is_err());
        assert!(parse::<U64Arg>("17").is_err());
        assert_eq!(parse::<CountArg>("17"), Ok(CountArg(17)));
        assert_eq!(parse::<CountArg>("\"0x11\""), Ok(CountArg(17)));
        assert_eq!(
            parse::<U256Arg>(&format!("\"0x{}\"", "f".repeat(64))),
            Ok(U256Arg(U256::MAX))
        );
        assert!(parse::<U256Arg>(&format!("\"0x1{}\"", "0".repeat(64))).is_err());
    }

    #[test]
    fn block_ids_cover_tags_numbers_and_eip1898() {
        assert_eq!(
            parse::<BlockId>("\"latest\""),
            Ok(BlockId::Tag(BlockTag::Latest))
        );
        assert_eq!(
            parse::<BlockId>("\"0x2a\""),
            Ok(BlockId::Tag(BlockTag::Number(42)))
        );
        assert_eq!(
            parse::<BlockId>("{\"blockNumber\":\"0x2a\"}"),
            Ok(BlockId::Tag(BlockTag::Number(42)))
        );
        let hash = format!("0x{}", "ab".repeat(32));
        assert_eq!(
            parse::<BlockId>(&format!(
                "{{\"blockHash\":\"{hash}\",\"requireCanonical\":true}}"
            )),
            Ok(BlockId::Hash(B256::repeat_byte(0xab)))
        );
        assert!(parse::<BlockId>("\"newest\"").is_err());
        assert!(parse::<BlockId>("{}").is_err());
    }

    #[test]
    fn filter_topics_follow_geth() {
        let t = format!("\"0x{}\"", "11".repeat(32));
        let args: FilterArgs = parse(&format!(
            "{{\"topics\":[null,{t},[{t},null]],\"address\":\"0x{}\"}}",
            "22".repeat(20)
        ))
        .unwrap();
        let f = args.log_filter().unwrap();
        assert_eq!(f.addresses, vec![Address::repeat_byte(0x22)]);
        assert_eq!(
            f.topics,
            vec![None, Some(vec![B256::repeat_byte(0x11)]), None]
        );
        let five: FilterArgs = parse("{\"topics\":[null,null,null,null,null]}").unwrap();
        assert!(five.log_filter().is_err());
    }

    #[test]
    fn params_are_bounded_arrays() {
        let raw = RawValue::from_string("[1,2,3]".to_string()).unwrap();
        assert!(Params::parse(Some(&raw), 2).is_err());
        let p = Params::parse(Some(&raw), 3).unwrap();
        assert_eq!(p.required::<u64>(2), Ok(3));
        assert!(p.required::<u64>(3).is_err());
        let obj = RawValue::from_string("{\"a\":1}".to_string()).unwrap();
        assert!(Params::parse(Some(&obj), 3).is_err());
    }
}
