//! Every answered `eth_` method's result checked against the Ethereum execution-apis
//! specification's schemas (`src/schemas/*.yaml` of ethereum/execution-apis at commit
//! 00eba39: base types, `Block`, `TransactionInfo`, `ReceiptInfo`, `Log`, fee history),
//! transcribed here as [`Shape`]s. Every object is checked closed — stricter than the spec,
//! which closes `Log` and `ReceiptInfo` but leaves `Block` and `TransactionInfo` open — so a
//! field the spec does not name fails, and so does a missing required one or a value of the
//! wrong form (a quantity with a leading zero, a hash of the wrong length, upper-case hex
//! where the spec wants lower case).

use super::*;

/// A JSON form from the specification.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `uint`: `0x` and lower-case hex without leading zeros.
    Uint,
    /// `hash32` / `bytes32`: 32 bytes, lower-case hex.
    Hash32,
    /// `address`: 20 bytes.
    Address,
    /// `bytes`: any number of whole bytes, lower-case hex.
    Bytes,
    /// `bytes8`.
    Bytes8,
    /// `bytes256` (a logs bloom).
    Bytes256,
    /// `byte`: one or two hex digits.
    Byte,
    Bool,
    Null,
    /// A JSON number from 0 to 1 (`gasUsedRatio` entries).
    Ratio,
    Array(&'static Shape),
    /// A closed object: its fields (in groups, as the spec composes them), whether each is
    /// required.
    Object(&'static [&'static [Field]]),
    /// Exactly the first alternative that fits is enough (`oneOf`/`anyOf` as the spec uses
    /// them: the alternatives never overlap).
    OneOf(&'static [Shape]),
    /// An object whose `type` field picks its shape (the spec's signed transaction kinds).
    ByType(&'static [(&'static str, Shape)]),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    shape: Shape,
    required: bool,
}

const fn req(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: true,
    }
}

const fn opt(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: false,
    }
}

const ADDRESS_OR_NULL: Shape = Shape::OneOf(&[Shape::Address, Shape::Null]);
/// The block fields of a transaction: the specification models included transactions only;
/// geth (and Kaon) answer `null` in them for a pooled one.
const HASH_OR_NULL: Shape = Shape::OneOf(&[Shape::Hash32, Shape::Null]);
const UINT_OR_NULL: Shape = Shape::OneOf(&[Shape::Uint, Shape::Null]);

const LOG: Shape = Shape::Object(&[&[
    opt("removed", Shape::Bool),
    opt("blockTimestamp", Shape::Uint),
    opt("logIndex", Shape::Uint),
    opt("transactionIndex", Shape::Uint),
    req("transactionHash", Shape::Hash32),
    opt("blockHash", Shape::Hash32),
    opt("blockNumber", Shape::Uint),
    opt("address", Shape::Address),
    opt("data", Shape::Bytes),
    opt("topics", Shape::Array(&Shape::Hash32)),
]]);

const RECEIPT: Shape = Shape::Object(&[&[
    opt("type", Shape::Byte),
    req("transactionHash", Shape::Hash32),
    req("transactionIndex", Shape::Uint),
    req("blockHash", Shape::Hash32),
    req("blockNumber", Shape::Uint),
    req("from", Shape::Address),
    opt("to", ADDRESS_OR_NULL),
    req("cumulativeGasUsed", Shape::Uint),
    req("gasUsed", Shape::Uint),
    opt("blobGasUsed", Shape::Uint),
    opt("contractAddress", ADDRESS_OR_NULL),
    req("logs", Shape::Array(&LOG)),
    req("logsBloom", Shape::Bytes256),
    opt("root", Shape::Hash32),
    opt("status", Shape::Uint),
    req("effectiveGasPrice", Shape::Uint),
    opt("blobGasPrice", Shape::Uint),
]]);

const ACCESS_LIST: Shape = Shape::Array(&Shape::Object(&[&[
    req("address", Shape::Address),
    req("storageKeys", Shape::Array(&Shape::Hash32)),
]]));

/// `TransactionInfo`'s contextual fields.
const TX_CONTEXT: &[Field] = &[
    req("blockHash", HASH_OR_NULL),
    req("blockNumber", UINT_OR_NULL),
    req("blockTimestamp", UINT_OR_NULL),
    req("from", Shape::Address),
    req("hash", Shape::Hash32),
    req("transactionIndex", UINT_OR_NULL),
];

/// The unsigned fields every transaction type has.
const TX_COMMON: &[Field] = &[
    req("type", Shape::Byte),
    req("nonce", Shape::Uint),
    opt("to", ADDRESS_OR_NULL),
    req("gas", Shape::Uint),
    req("value", Shape::Uint),
    req("input", Shape::Bytes),
];

/// The signature of a typed transaction (`v` only as a deprecated copy of `yParity`).
const TX_TYPED_SIGNATURE: &[Field] = &[
    req("yParity", Shape::Byte),
    opt("v", Shape::Byte),
    req("r", Shape::Uint),
    req("s", Shape::Uint),
];

/// `TransactionInfo` of an EIP-1559 transaction.
const TX_1559: Shape = Shape::Object(&[
    TX_CONTEXT,
    TX_COMMON,
    &[
        req("maxPriorityFeePerGas", Shape::Uint),
        req("maxFeePerGas", Shape::Uint),
        req("gasPrice", Shape::Uint),
        req("accessList", ACCESS_LIST),
        req("chainId", Shape::Uint),
    ],
    TX_TYPED_SIGNATURE,
]);

/// `TransactionInfo` of an EIP-2930 transaction.
const TX_2930: Shape = Shape::Object(&[
    TX_CONTEXT,
    TX_COMMON,
    &[
        req("gasPrice", Shape::Uint),
        req("accessList", ACCESS_LIST),
        req("chainId", Shape::Uint),
    ],
    TX_TYPED_SIGNATURE,
]);

/// `TransactionInfo` of a legacy transaction (`v` carries the parity; no `yParity`).
const TX_LEGACY: Shape = Shape::Object(&[
    TX_CONTEXT,
    TX_COMMON,
    &[
        req("gasPrice", Shape::Uint),
        opt("chainId", Shape::Uint),
        req("v", Shape::Uint),
        req("r", Shape::Uint),
        req("s", Shape::Uint),
    ],
]);

const TRANSACTION: Shape = Shape::ByType(&[("0x0", TX_LEGACY), ("0x1", TX_2930), ("0x2", TX_1559)]);

/// `Block` with either form of `transactions`.
const BLOCK: Shape = Shape::Object(&[&[
    req("hash", Shape::Hash32),
    req("parentHash", Shape::Hash32),
    req("sha3Uncles", Shape::Hash32),
    req("miner", Shape::Address),
    req("stateRoot", Shape::Hash32),
    req("transactionsRoot", Shape::Hash32),
    req("receiptsRoot", Shape::Hash32),
    req("logsBloom", Shape::Bytes256),
    opt("difficulty", Shape::Uint),
    req("number", Shape::Uint),
    req("gasLimit", Shape::Uint),
    req("gasUsed", Shape::Uint),
    req("timestamp", Shape::Uint),
    req("extraData", Shape::Bytes),
    req("mixHash", Shape::Hash32),
    req("nonce", Shape::Bytes8),
    opt("totalDifficulty", Shape::Uint),
    opt("baseFeePerGas", Shape::Uint),
    opt("withdrawalsRoot", Shape::Hash32),
    opt("blobGasUsed", Shape::Uint),
    opt("excessBlobGas", Shape::Uint),
    opt("parentBeaconBlockRoot", Shape::Hash32),
    req("size", Shape::Uint),
    req(
        "transactions",
        Shape::OneOf(&[Shape::Array(&Shape::Hash32), Shape::Array(&TRANSACTION)]),
    ),
    req("uncles", Shape::Array(&Shape::Hash32)),
]]);

const FEE_HISTORY: Shape = Shape::Object(&[&[
    req("oldestBlock", Shape::Uint),
    req("baseFeePerGas", Shape::Array(&Shape::Uint)),
    opt("baseFeePerBlobGas", Shape::Array(&Shape::Uint)),
    req("gasUsedRatio", Shape::Array(&Shape::Ratio)),
    opt("blobGasUsedRatio", Shape::Array(&Shape::Ratio)),
    opt("reward", Shape::Array(&Shape::Array(&Shape::Uint))),
]]);

const SYNCING: Shape = Shape::OneOf(&[
    Shape::Bool,
    Shape::Object(&[&[
        req("startingBlock", Shape::Uint),
        req("currentBlock", Shape::Uint),
        req("highestBlock", Shape::Uint),
    ]]),
]);

fn hex_digits<'a>(s: &'a str, path: &str) -> Result<&'a str, String> {
    s.strip_prefix("0x")
        .filter(|d| d.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| format!("{path}: {s:?} is not 0x-prefixed hex"))
}

fn lower(digits: &str, s: &str, path: &str) -> Result<(), String> {
    match digits.bytes().any(|c| c.is_ascii_uppercase()) {
        true => Err(format!("{path}: {s:?} has upper-case hex")),
        false => Ok(()),
    }
}

/// Checks a hex string of exactly `len` bytes (any number of whole bytes if `None`).
fn fixed(s: &str, len: Option<usize>, path: &str) -> Result<(), String> {
    let digits = hex_digits(s, path)?;
    lower(digits, s, path)?;
    match len {
        Some(n) if digits.len() != 2 * n => Err(format!("{path}: {s:?} is not {n} bytes")),
        None if digits.len() % 2 != 0 => Err(format!("{path}: {s:?} has an odd digit count")),
        _ => Ok(()),
    }
}

fn check_string(v: &Value, shape: Shape, path: &str) -> Result<(), String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{path}: {v} is not a string ({shape:?})"))?;
    match shape {
        Shape::Uint => {
            let digits = hex_digits(s, path)?;
            lower(digits, s, path)?;
            if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
                return Err(format!("{path}: {s:?} is not a minimal quantity"));
            }
            Ok(())
        }
        Shape::Hash32 => fixed(s, Some(32), path),
        Shape::Address => match hex_digits(s, path)?.len() {
            40 => Ok(()),
            _ => Err(format!("{path}: {s:?} is not an address")),
        },
        Shape::Bytes => fixed(s, None, path),
        Shape::Bytes8 => fixed(s, Some(8), path),
        Shape::Bytes256 => fixed(s, Some(256), path),
        Shape::Byte => {
            let digits = hex_digits(s, path)?;
            lower(digits, s, path)?;
            match digits.len() {
                1 | 2 => Ok(()),
                _ => Err(format!("{path}: {s:?} is not a byte")),
            }
        }
        _ => unreachable!("not a string shape: {shape:?}"),
    }
}

fn check_object(v: &Value, groups: &[&[Field]], path: &str) -> Result<(), String> {
    let fields = || groups.iter().flat_map(|g| g.iter());
    let object = v
        .as_object()
        .ok_or_else(|| format!("{path}: {v} is not an object"))?;
    if let Some(extra) = object
        .keys()
        .find(|k| !fields().any(|f| f.name == k.as_str()))
    {
        return Err(format!(
            "{path}: field {extra:?} is not in the specification"
        ));
    }
    for field in fields() {
        match object.get(field.name) {
            Some(value) => check(value, field.shape, &format!("{path}.{}", field.name))?,
            None if field.required => {
                return Err(format!("{path}: required field {:?} missing", field.name))
            }
            None => {}
        }
    }
    Ok(())
}

/// Whether `v` has the form `shape`; the error names the path to the first mismatch.
fn check(v: &Value, shape: Shape, path: &str) -> Result<(), String> {
    match shape {
        Shape::Bool if v.is_boolean() => Ok(()),
        Shape::Null if v.is_null() => Ok(()),
        Shape::Ratio if v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) => Ok(()),
        Shape::Bool | Shape::Null | Shape::Ratio => Err(format!("{path}: {v} is not {shape:?}")),
        Shape::Array(item) => {
            let items = v
                .as_array()
                .ok_or_else(|| format!("{path}: {v} is not an array"))?;
            (items.iter().enumerate())
                .try_for_each(|(i, x)| check(x, *item, &format!("{path}[{i}]")))
        }
        Shape::Object(fields) => check_object(v, fields, path),
        Shape::OneOf(alternatives) => {
            let errors: Vec<String> = alternatives
                .iter()
                .map_while(|alt| check(v, *alt, path).err())
                .collect();
            match errors.len() == alternatives.len() {
                true => Err(format!(
                    "{path}: fits no alternative: {}",
                    errors.join("; ")
                )),
                false => Ok(()),
            }
        }
        Shape::ByType(kinds) => {
            let kind = v["type"].as_str().unwrap_or_default();
            let (_, shape) = kinds
                .iter()
                .find(|(k, _)| *k == kind)
                .ok_or_else(|| format!("{path}: unknown transaction type {kind:?}"))?;
            check(v, *shape, path)
        }
        _ => check_string(v, shape, path),
    }
}

#[track_caller]
fn assert_fits(method: &str, v: &Value, shape: Shape) {
    if let Err(e) = check(v, shape, method) {
        panic!("{e}\nanswer: {v}");
    }
}

/// The checker itself refuses what the specification refuses (so a lenient checker cannot
/// pass every answer).
#[test]
fn rpc_schema_checker_refuses_what_the_specification_refuses() {
    let bad = [
        (json!("0x01"), Shape::Uint),
        (json!("0x"), Shape::Uint),
        (json!("0xAB"), Shape::Uint),
        (json!(1), Shape::Uint),
        (json!(format!("0x{}", "a".repeat(63))), Shape::Hash32),
        (json!("0xabc"), Shape::Bytes),
        (json!(format!("0x{}", "0".repeat(38))), Shape::Address),
        (json!({"transactionHash": hex(&[1; 32]), "extra": 1}), LOG),
        (json!({"address": hex(&[1; 20])}), LOG),
        (json!("0x1"), ADDRESS_OR_NULL),
        (json!({"type": "0x7"}), TRANSACTION),
        (json!("0xA"), Shape::Byte),
        (json!(1.5), Shape::Ratio),
        (json!([{"address": hex(&[1; 20])}]), ACCESS_LIST),
    ];
    for (value, shape) in bad {
        assert!(
            check(&value, shape, "t").is_err(),
            "{value} passed as {shape:?}"
        );
    }
    let good = [
        (json!("0x0"), Shape::Uint),
        (json!("0x1dcd6500"), Shape::Uint),
        (json!("0x"), Shape::Bytes),
        (json!(null), ADDRESS_OR_NULL),
        (json!({"transactionHash": hex(&[1; 32])}), LOG),
        (json!(false), SYNCING),
    ];
    for (value, shape) in good {
        assert!(
            check(&value, shape, "t").is_ok(),
            "{value} refused as {shape:?}"
        );
    }
}

/// Every answered `eth_` method that returns data, on the fixture chain: blocks in both
/// forms, a 1559 and a legacy transaction with their receipts and logs, account reads, calls,
/// fees, filters and lookups by index. (`eth_createAccessList` needs the node's EVM, which
/// this in-memory backend does not have.)
#[test]
fn rpc_answers_fit_the_execution_apis_schemas() {
    let h = Harness::default();
    let tx = hex(signed(CHAIN, 0).hash().as_slice());
    let block1 = hex(&[0x41; 32]);
    let alice = hex(alice().as_slice());
    let echo = hex(ECHO.as_slice());
    let uints = [
        ("eth_blockNumber", json!([])),
        ("eth_chainId", json!([])),
        ("eth_gasPrice", json!([])),
        ("eth_maxPriorityFeePerGas", json!([])),
        ("eth_getBalance", json!([alice, "latest"])),
        ("eth_getTransactionCount", json!([alice, "latest"])),
        ("eth_getBlockTransactionCountByNumber", json!(["0x1"])),
        ("eth_getBlockTransactionCountByHash", json!([block1])),
        ("eth_getUncleCountByBlockNumber", json!(["0x1"])),
        ("eth_getUncleCountByBlockHash", json!([block1])),
        (
            "eth_estimateGas",
            json!([{"from": alice, "to": hex(BOB.as_slice())}]),
        ),
        ("eth_newFilter", json!([{"fromBlock": "0x0"}])),
        ("eth_newBlockFilter", json!([])),
    ];
    for (method, params) in uints {
        assert_fits(method, &h.ok(method, params), Shape::Uint);
    }
    // Filter ids are random: one in sixteen once began with a zero digit, which a `uint` may
    // not. Enough of them that such an id would all but surely show up.
    for _ in 0..64 {
        let id = h.ok("eth_newBlockFilter", json!([]));
        assert_fits("eth_newBlockFilter", &id, Shape::Uint);
        assert_eq!(h.ok("eth_uninstallFilter", json!([id])), json!(true));
    }
    let answers = [
        ("eth_syncing", json!([]), SYNCING),
        ("eth_accounts", json!([]), Shape::Array(&Shape::Address)),
        ("eth_getCode", json!([echo, "latest"]), Shape::Bytes),
        (
            "eth_getStorageAt",
            json!([echo, "0x1", "latest"]),
            Shape::Hash32,
        ),
        ("eth_call", json!([{"to": echo}, "latest"]), Shape::Bytes),
        ("eth_getBlockByNumber", json!(["earliest", true]), BLOCK),
        ("eth_getTransactionByHash", json!([tx]), TRANSACTION),
        (
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["0x1", "0x0"]),
            TRANSACTION,
        ),
        (
            "eth_getTransactionByBlockHashAndIndex",
            json!([block1, "0x0"]),
            TRANSACTION,
        ),
        ("eth_getTransactionReceipt", json!([tx]), RECEIPT),
        (
            "eth_getBlockReceipts",
            json!(["0x1"]),
            Shape::Array(&RECEIPT),
        ),
        (
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest"}]),
            Shape::Array(&LOG),
        ),
        (
            "eth_feeHistory",
            json!(["0x2", "latest", [25, 75]]),
            FEE_HISTORY,
        ),
    ];
    for (method, params, shape) in answers {
        assert_fits(method, &h.ok(method, params), shape);
    }
    // Blocks in the form asked for: hashes, or full transactions.
    for (params, full) in [(json!(["0x1", false]), false), (json!(["0x1", true]), true)] {
        let block = h.ok("eth_getBlockByNumber", params);
        assert_fits("eth_getBlockByNumber", &block, BLOCK);
        assert_eq!(block["transactions"][0].is_object(), full, "{block}");
    }
    let block = h.ok("eth_getBlockByHash", json!([block1, true]));
    assert_fits("eth_getBlockByHash", &block, BLOCK);
    assert!(block["transactions"][0].is_object(), "{block}");
    let filter = h.ok("eth_newFilter", json!([{"fromBlock": "0x0"}]));
    assert_fits(
        "eth_getFilterLogs",
        &h.ok("eth_getFilterLogs", json!([filter])),
        Shape::Array(&LOG),
    );
    assert_fits(
        "eth_getFilterChanges",
        &h.ok("eth_getFilterChanges", json!([filter])),
        Shape::Array(&LOG),
    );
    assert_fits(
        "eth_uninstallFilter",
        &h.ok("eth_uninstallFilter", json!([filter])),
        Shape::Bool,
    );

    let included = h.ok("eth_getTransactionByHash", json!([tx]));
    assert!(included["blockHash"].is_string(), "{included}");
    assert!(
        !h.ok("eth_getLogs", json!([{"blockHash": block1}]))
            .as_array()
            .unwrap()
            .is_empty(),
        "the fixture's logs are checked"
    );

    // Pooled transactions: a 1559 one here, a legacy contract creation on the other chain.
    let pooled = signed(CHAIN, 1);
    let sent = h.ok("eth_sendRawTransaction", json!([hex(pooled.raw())]));
    assert_fits("eth_sendRawTransaction", &sent, Shape::Hash32);
    assert_fits(
        "eth_getTransactionByHash (pooled)",
        &h.ok("eth_getTransactionByHash", json!([sent])),
        TRANSACTION,
    );
    let legacy = signed_legacy(OTHER_CHAIN, 1);
    let sent = h.call_on(
        "/chain/1002",
        "eth_sendRawTransaction",
        json!([hex(legacy.raw())]),
    );
    let got = h.call_on(
        "/chain/1002",
        "eth_getTransactionByHash",
        json!([sent["result"]]),
    );
    assert_eq!(got["result"]["type"], "0x0");
    assert_fits(
        "eth_getTransactionByHash (legacy)",
        &got["result"],
        TRANSACTION,
    );
}
