//! Signed transactions: the EIP-155 worked example, fixtures signed by eth-account, hostile
//! bytes, and property tests of the codec and of batch recovery.

use alloy_primitives::hex;
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_rlp::{Encodable, Header};
use kaon::crypto::tx::{
    address_of, decode_recover_batch, recover_all, recover_batch, AccessList, AccessListItem,
    DecodeRules, Eip1559Tx, Eip2930Tx, LegacyTx, RecoveredTx, Signature, SignedTransaction,
    Transaction, TxError, TxKind, TxType, MAX_TX_BYTES,
};
use kaon::types::ChainId;
use proptest::prelude::*;
use serde_json::Value;
use std::str::FromStr;

const FIXTURES: &str = include_str!("../vectors/tx/fixtures.json");

/// Group order of secp256k1.
fn curve_n() -> U256 {
    U256::from_str("0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141").unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).unwrap()
}

fn permissive() -> DecodeRules {
    DecodeRules {
        allow_unprotected_legacy: true,
        ..DecodeRules::default()
    }
}

/// The transaction of EIP-155's worked example.
fn eip155_example() -> Transaction {
    LegacyTx {
        chain_id: Some(ChainId(1)),
        nonce: 9,
        gas_price: 20_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(0x35)),
        value: U256::from(10u64).pow(U256::from(18)),
        input: Bytes::new(),
    }
    .into()
}

const EIP155_SIGNED: &str = "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";

#[test]
fn eip155_worked_example() {
    let tx = eip155_example();
    let mut payload = Vec::new();
    tx.encode_signing_payload(&mut payload);
    assert_eq!(
        hex::encode(&payload),
        "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080"
    );
    assert_eq!(
        tx.signing_hash(),
        B256::from_str("0xdaf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53")
            .unwrap()
    );

    let signed = tx.sign(&[0x46; 32]).unwrap();
    let r = U256::from_str(
        "18515461264373351373200002665853028612451056578545711640558177340181847433846",
    )
    .unwrap();
    let s = U256::from_str(
        "46948507304638947509940763649030358759909902576025900602547168820602576006531",
    )
    .unwrap();
    assert_eq!(signed.signature(), &Signature::new(r, s, false));
    assert_eq!(hex::encode(signed.raw()), EIP155_SIGNED);
    // v = 37 = 1 * 2 + 35 + 0 sits just after the data field.
    assert_eq!(signed.raw()[signed.encoded_len() - 67], 37);

    let sender = Address::from_str("0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F").unwrap();
    assert_eq!(address_of(&[0x46; 32]).unwrap(), sender);

    let decoded = SignedTransaction::decode(&unhex(EIP155_SIGNED)).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(decoded.chain_id(), Some(ChainId(1)));
    assert_eq!(decoded.hash(), keccak256(unhex(EIP155_SIGNED)));
    assert_eq!(decoded.recover_sender().unwrap(), sender);
    assert_eq!(decoded.encode().as_ref(), unhex(EIP155_SIGNED).as_slice());
}

fn json_u256(v: &Value) -> U256 {
    U256::from_str(v.as_str().unwrap()).unwrap()
}

fn json_u128(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

fn json_to(v: &Value) -> TxKind {
    match v.as_str() {
        None => TxKind::Create,
        Some(addr) => TxKind::Call(Address::from_str(addr).unwrap()),
    }
}

fn json_access_list(v: &Value) -> AccessList {
    AccessList(
        v.as_array()
            .unwrap()
            .iter()
            .map(|item| AccessListItem {
                address: Address::from_str(item["address"].as_str().unwrap()).unwrap(),
                storage_keys: item["storageKeys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| B256::from_str(k.as_str().unwrap()).unwrap())
                    .collect(),
            })
            .collect(),
    )
}

/// The transaction a fixture describes, rebuilt from its fields alone.
fn fixture_tx(f: &Value) -> Transaction {
    let chain_id = f["chain_id"].as_u64().map(ChainId);
    let nonce = f["nonce"].as_u64().unwrap();
    let gas_limit = f["gas_limit"].as_u64().unwrap();
    let to = json_to(&f["to"]);
    let value = json_u256(&f["value"]);
    let input = Bytes::from(unhex(f["input"].as_str().unwrap()));
    match f["type"].as_u64().unwrap() {
        0 => LegacyTx {
            chain_id,
            nonce,
            gas_price: json_u128(&f["gas_price"]),
            gas_limit,
            to,
            value,
            input,
        }
        .into(),
        1 => Eip2930Tx {
            chain_id: chain_id.unwrap(),
            nonce,
            gas_price: json_u128(&f["gas_price"]),
            gas_limit,
            to,
            value,
            input,
            access_list: json_access_list(&f["access_list"]),
        }
        .into(),
        2 => Eip1559Tx {
            chain_id: chain_id.unwrap(),
            nonce,
            max_priority_fee_per_gas: json_u128(&f["max_priority_fee_per_gas"]),
            max_fee_per_gas: json_u128(&f["max_fee_per_gas"]),
            gas_limit,
            to,
            value,
            input,
            access_list: json_access_list(&f["access_list"]),
        }
        .into(),
        other => panic!("fixture type {other}"),
    }
}

fn fixtures() -> Vec<Value> {
    let all: Value = serde_json::from_str(FIXTURES).unwrap();
    all["fixtures"].as_array().unwrap().clone()
}

#[test]
fn fixtures_signed_by_eth_account_decode_recover_and_reencode() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 12);
    for f in &fixtures {
        let name = f["name"].as_str().unwrap();
        let raw = unhex(f["raw"].as_str().unwrap());
        let unprotected = f["chain_id"].is_null();
        if unprotected {
            assert_eq!(
                SignedTransaction::decode(&raw),
                Err(TxError::MissingChainId),
                "{name}"
            );
        }
        let signed = SignedTransaction::decode_with(&raw, &permissive())
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        assert_eq!(
            signed.hash(),
            B256::from_str(f["hash"].as_str().unwrap()).unwrap(),
            "{name}"
        );
        let sender = Address::from_str(f["sender"].as_str().unwrap()).unwrap();
        assert_eq!(signed.recover_sender().unwrap(), sender, "{name}");
        let secret: [u8; 32] = unhex(f["secret_key"].as_str().unwrap()).try_into().unwrap();
        assert_eq!(address_of(&secret).unwrap(), sender, "{name}");

        let expected = fixture_tx(f);
        assert_eq!(signed.tx(), &expected, "{name}: fields");
        let ty = match f["type"].as_u64().unwrap() {
            0 => TxType::Legacy,
            1 => TxType::Eip2930,
            _ => TxType::Eip1559,
        };
        assert_eq!(signed.tx_type(), ty, "{name}");
        assert_eq!(
            signed.chain_id(),
            f["chain_id"].as_u64().map(ChainId),
            "{name}"
        );
        let v = f["v"].as_u64().unwrap();
        let sig = signed.signature();
        assert_eq!(sig.r(), json_u256(&f["r"]), "{name}");
        assert_eq!(sig.s(), json_u256(&f["s"]), "{name}");
        assert_eq!(
            sig.v(),
            if ty == TxType::Legacy {
                (v - 27) % 2 == 1
            } else {
                v == 1
            }
        );

        // The fields alone re-encode to the exact bytes, and signing them again with the same
        // key (RFC 6979) reproduces eth-account's envelope byte for byte.
        let rebuilt = SignedTransaction::new(expected.clone(), *sig).unwrap();
        assert_eq!(
            rebuilt.raw().as_ref(),
            raw.as_slice(),
            "{name}: re-encoding"
        );
        assert_eq!(signed.encode().as_ref(), raw.as_slice(), "{name}");
        assert_eq!(expected.sign(&secret).unwrap(), signed, "{name}: signing");
    }
}

#[test]
fn fixtures_recover_in_one_batch() {
    let raws: Vec<Vec<u8>> = fixtures()
        .iter()
        .map(|f| unhex(f["raw"].as_str().unwrap()))
        .collect();
    let senders: Vec<Address> = fixtures()
        .iter()
        .map(|f| Address::from_str(f["sender"].as_str().unwrap()).unwrap())
        .collect();
    let recovered = decode_recover_batch(&raws, &permissive());
    for ((got, sender), raw) in recovered.iter().zip(&senders).zip(&raws) {
        let got = got.as_ref().unwrap();
        assert_eq!(got.sender(), *sender);
        assert_eq!(got.tx().raw().as_ref(), raw.as_slice());
    }
    // Under the default rules only the unprotected one fails, in its place.
    let strict = decode_recover_batch(&raws, &DecodeRules::default());
    for (result, f) in strict.iter().zip(fixtures()) {
        if f["chain_id"].is_null() {
            assert_eq!(result, &Err(TxError::MissingChainId));
        } else {
            assert!(result.is_ok());
        }
    }
}

/// An RLP list of already-encoded items.
fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
    let payload_length = items.iter().map(Vec::len).sum();
    let mut out = Vec::new();
    Header {
        list: true,
        payload_length,
    }
    .encode(&mut out);
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

fn enc<T: Encodable>(value: T) -> Vec<u8> {
    alloy_rlp::encode(value)
}

/// The EIP-155 example's signed list items, to tamper with one at a time.
fn example_items() -> Vec<Vec<u8>> {
    let signed = eip155_example().sign(&[0x46; 32]).unwrap();
    let sig = signed.signature();
    vec![
        enc(9u64),
        enc(20_000_000_000u128),
        enc(21_000u64),
        enc(Address::repeat_byte(0x35)),
        enc(U256::from(10u64).pow(U256::from(18))),
        enc(Bytes::new()),
        enc(37u64),
        enc(sig.r()),
        enc(sig.s()),
    ]
}

fn decode_items(items: &[Vec<u8>]) -> Result<SignedTransaction, TxError> {
    SignedTransaction::decode(&rlp_list(items))
}

fn rlp_err(field: &'static str, source: alloy_rlp::Error) -> TxError {
    TxError::Rlp { field, source }
}

#[test]
fn tampered_items_are_rejected_with_reasons() {
    assert!(decode_items(&example_items()).is_ok());

    let with = |index: usize, item: Vec<u8>| {
        let mut items = example_items();
        items[index] = item;
        decode_items(&items)
    };
    // Leading zeros and non-canonical single bytes: a second encoding would be a second hash.
    assert_eq!(
        with(0, vec![0x82, 0x00, 0x09]),
        Err(rlp_err("nonce", alloy_rlp::Error::LeadingZero))
    );
    assert_eq!(
        with(0, vec![0x81, 0x09]),
        Err(rlp_err("nonce", alloy_rlp::Error::NonCanonicalSingleByte))
    );
    assert_eq!(
        with(2, vec![0x00]),
        Err(rlp_err("gas_limit", alloy_rlp::Error::LeadingZero))
    );
    // A 19-byte recipient.
    assert_eq!(
        with(
            3,
            enc(alloy_primitives::FixedBytes::<19>::repeat_byte(0x35))
        ),
        Err(rlp_err("to", alloy_rlp::Error::UnexpectedLength))
    );
    // A list where the input string belongs.
    assert_eq!(
        with(5, vec![0xc0]),
        Err(rlp_err("input", alloy_rlp::Error::UnexpectedList))
    );
    // Values that do not fit their fields.
    assert_eq!(
        with(0, enc(U256::MAX)),
        Err(rlp_err("nonce", alloy_rlp::Error::Overflow))
    );
    let mut big = vec![0xa1, 0x01];
    big.extend_from_slice(&[0u8; 32]);
    assert_eq!(
        with(4, big),
        Err(rlp_err("value", alloy_rlp::Error::Overflow))
    );

    // v outside {27, 28} ∪ [35, ∞).
    for v in [0u64, 1, 26, 29, 34] {
        assert_eq!(with(6, enc(v)), Err(TxError::InvalidV(v)));
    }
    // v = 27: pre-EIP-155, refused by default; the signature is then over another hash.
    assert_eq!(with(6, enc(27u64)), Err(TxError::MissingChainId));

    // Signature scalars.
    let n = curve_n();
    assert_eq!(with(7, enc(U256::ZERO)), Err(TxError::SignatureOutOfRange));
    assert_eq!(with(7, enc(n)), Err(TxError::SignatureOutOfRange));
    assert_eq!(with(8, enc(U256::ZERO)), Err(TxError::SignatureOutOfRange));
    assert_eq!(with(8, enc(n)), Err(TxError::SignatureOutOfRange));
    // The malleated twin (r, n - s, other parity) is refused (EIP-2).
    let s = example_items()[8].clone();
    let s = alloy_rlp::decode_exact::<U256>(&s).unwrap();
    let mut twin = example_items();
    twin[6] = enc(38u64);
    twin[8] = enc(n - s);
    assert_eq!(decode_items(&twin), Err(TxError::HighS));

    // Missing and extra fields.
    let mut short = example_items();
    short.pop();
    assert_eq!(
        decode_items(&short),
        Err(rlp_err("s", alloy_rlp::Error::InputTooShort))
    );
    let mut long = example_items();
    long.push(enc(1u64));
    assert_eq!(decode_items(&long), Err(TxError::ExtraFields(1)));
}

#[test]
fn envelope_errors() {
    let raw = unhex(EIP155_SIGNED);
    assert_eq!(SignedTransaction::decode(&[]), Err(TxError::Empty));
    for ty in [0x00u8, 0x03, 0x04, 0x05, 0x7f] {
        let mut typed = vec![ty];
        typed.extend_from_slice(&raw);
        assert_eq!(
            SignedTransaction::decode(&typed),
            Err(TxError::UnsupportedType(ty))
        );
    }
    // A typed envelope wrapped in an RLP string (the block-body form) is not an envelope.
    let typed = fixtures()
        .iter()
        .find(|f| f["type"] == 2)
        .map(|f| unhex(f["raw"].as_str().unwrap()))
        .unwrap();
    let wrapped = enc(Bytes::from(typed.clone()));
    assert_eq!(
        SignedTransaction::decode(&wrapped),
        Err(TxError::NotAnEnvelope(wrapped[0]))
    );
    assert!(SignedTransaction::decode(&typed).is_ok());
    // Only the type byte.
    assert_eq!(
        SignedTransaction::decode(&[0x02]),
        Err(rlp_err("transaction list", alloy_rlp::Error::InputTooShort))
    );
    // A string where the list belongs.
    assert_eq!(
        SignedTransaction::decode(&[0x01, 0x80]),
        Err(rlp_err(
            "transaction list",
            alloy_rlp::Error::UnexpectedString
        ))
    );

    let mut trailing = raw.clone();
    trailing.extend_from_slice(&[0x80, 0x80]);
    assert_eq!(
        SignedTransaction::decode(&trailing),
        Err(TxError::TrailingBytes(2))
    );

    let oversize = vec![0xc0; MAX_TX_BYTES + 1];
    assert_eq!(
        SignedTransaction::decode(&oversize),
        Err(TxError::Oversize {
            len: MAX_TX_BYTES + 1,
            max: MAX_TX_BYTES
        })
    );
    let tight = DecodeRules {
        max_bytes: raw.len() - 1,
        ..DecodeRules::default()
    };
    assert!(matches!(
        SignedTransaction::decode_with(&raw, &tight),
        Err(TxError::Oversize { .. })
    ));
    assert!(SignedTransaction::decode_bytes(Bytes::from(raw), &DecodeRules::default()).is_ok());
}

#[test]
fn typed_y_parity_must_be_a_bit() {
    let tx: Transaction = Eip1559Tx {
        chain_id: ChainId(7),
        gas_limit: 21_000,
        ..Default::default()
    }
    .into();
    let signed = tx.sign(&[7; 32]).unwrap();
    let sig = signed.signature();
    let items = |y: u64| {
        let body = [
            enc(7u64),
            enc(0u64),
            enc(0u128),
            enc(0u128),
            enc(21_000u64),
            enc(TxKind::Create),
            enc(U256::ZERO),
            enc(Bytes::new()),
            enc(AccessList::default()),
            enc(y),
            enc(sig.r()),
            enc(sig.s()),
        ];
        let mut raw = vec![0x02];
        raw.extend(rlp_list(&body));
        raw
    };
    let good = items(u64::from(sig.v()));
    assert_eq!(good, signed.raw().to_vec());
    assert_eq!(
        SignedTransaction::decode(&items(2)),
        Err(TxError::InvalidYParity(2))
    );
    assert_eq!(
        SignedTransaction::decode(&items(27)),
        Err(TxError::InvalidYParity(27))
    );
}

#[test]
fn r_off_the_curve_fails_recovery_without_panicking() {
    let signed = eip155_example().sign(&[0x46; 32]).unwrap();
    let mut failures = 0;
    for r in 1u64..64 {
        let sig = Signature::new(
            U256::from(r),
            signed.signature().s(),
            signed.signature().v(),
        );
        let tampered = SignedTransaction::new(signed.tx().clone(), sig).unwrap();
        match tampered.recover_sender() {
            Err(TxError::InvalidSignature) => failures += 1,
            Ok(sender) => assert_ne!(sender, signed.recover_sender().unwrap()),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    // About half of all x coordinates have no point on the curve.
    assert!(failures > 10, "{failures}");
}

#[test]
fn unprotected_legacy_only_when_allowed() {
    let tx: Transaction = LegacyTx {
        chain_id: None,
        gas_limit: 21_000,
        ..Default::default()
    }
    .into();
    let signed = tx.sign(&[9; 32]).unwrap();
    assert_eq!(
        SignedTransaction::decode(signed.raw()),
        Err(TxError::MissingChainId)
    );
    let decoded = SignedTransaction::decode_with(signed.raw(), &permissive()).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(decoded.chain_id(), None);
    assert_eq!(
        decoded.recover_sender().unwrap(),
        address_of(&[9; 32]).unwrap()
    );
}

#[test]
fn signing_rejects_bad_keys_and_unencodable_chain_ids() {
    let tx = eip155_example();
    assert_eq!(tx.sign(&[0; 32]), Err(TxError::InvalidSecretKey));
    assert_eq!(tx.sign(&[0xff; 32]), Err(TxError::InvalidSecretKey));
    assert_eq!(address_of(&[0; 32]), Err(TxError::InvalidSecretKey));
    let huge: Transaction = LegacyTx {
        chain_id: Some(ChainId(u64::MAX / 2)),
        ..Default::default()
    }
    .into();
    assert_eq!(
        huge.sign(&[1; 32]),
        Err(TxError::ChainIdTooLarge(u64::MAX / 2))
    );
    // The largest chain id whose v still fits in 64 bits.
    let max = (u64::MAX - 36) / 2;
    let edge: Transaction = LegacyTx {
        chain_id: Some(ChainId(max)),
        ..Default::default()
    }
    .into();
    let signed = edge.sign(&[1; 32]).unwrap();
    assert_eq!(
        SignedTransaction::decode(signed.raw()).unwrap().chain_id(),
        Some(ChainId(max))
    );
}

#[test]
fn fee_helpers() {
    let dynamic: Transaction = Eip1559Tx {
        max_priority_fee_per_gas: 2,
        max_fee_per_gas: 10,
        gas_limit: 100,
        value: U256::from(5),
        ..Default::default()
    }
    .into();
    assert_eq!(dynamic.effective_gas_price(None), 10);
    assert_eq!(dynamic.effective_gas_price(Some(3)), 5);
    assert_eq!(dynamic.effective_gas_price(Some(9)), 10);
    assert_eq!(dynamic.effective_tip_per_gas(3), Some(2));
    assert_eq!(dynamic.effective_tip_per_gas(9), Some(1));
    assert_eq!(dynamic.effective_tip_per_gas(11), None);
    assert_eq!(dynamic.max_cost(), U256::from(1005));
    assert_eq!(dynamic.max_priority_fee_per_gas(), Some(2));

    let legacy: Transaction = LegacyTx {
        gas_price: 7,
        gas_limit: 3,
        ..Default::default()
    }
    .into();
    assert_eq!(legacy.effective_gas_price(Some(100)), 7);
    assert_eq!(legacy.effective_tip_per_gas(5), Some(2));
    assert_eq!(legacy.max_priority_fee_per_gas(), None);
    assert_eq!(legacy.max_cost(), U256::from(21));
    assert_eq!(legacy.to(), None);

    let rich: Transaction = Eip2930Tx {
        gas_price: u128::MAX,
        gas_limit: u64::MAX,
        value: U256::MAX,
        ..Default::default()
    }
    .into();
    assert_eq!(rich.max_cost(), U256::MAX);
}

#[test]
fn recovered_tx_keeps_its_sender() {
    let signed = eip155_example().sign(&[0x46; 32]).unwrap();
    let recovered = RecoveredTx::recover(signed.clone()).unwrap();
    assert_eq!(recovered.sender(), address_of(&[0x46; 32]).unwrap());
    assert_eq!(recovered.tx(), &signed);
    let (tx, sender) = recovered.into_parts();
    assert_eq!(RecoveredTx::from_trusted_parts(tx, sender).sender(), sender);
}

// ---- property tests -------------------------------------------------------------------------

fn arb_secret() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>().prop_filter("valid secp256k1 secret", |k| address_of(k).is_ok())
}

fn arb_u256() -> impl Strategy<Value = U256> {
    prop_oneof![
        Just(U256::ZERO),
        any::<u64>().prop_map(U256::from),
        any::<[u8; 32]>().prop_map(U256::from_be_bytes),
    ]
}

fn arb_kind() -> impl Strategy<Value = TxKind> {
    prop_oneof![
        Just(TxKind::Create),
        any::<[u8; 20]>().prop_map(|a| TxKind::Call(Address::from(a)))
    ]
}

fn arb_input() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn arb_access_list() -> impl Strategy<Value = AccessList> {
    prop::collection::vec(
        (
            any::<[u8; 20]>(),
            prop::collection::vec(any::<[u8; 32]>(), 0..4),
        )
            .prop_map(|(a, keys)| AccessListItem {
                address: Address::from(a),
                storage_keys: keys.into_iter().map(B256::from).collect(),
            }),
        0..4,
    )
    .prop_map(AccessList)
}

/// Small and extreme integers alike: RLP's edge cases sit at 0, < 0x80 and at full width.
fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..0x100, any::<u64>()]
}

fn arb_u128() -> impl Strategy<Value = u128> {
    prop_oneof![0u128..0x100, any::<u128>()]
}

fn arb_tx() -> impl Strategy<Value = Transaction> {
    let legacy = (
        prop::option::of(0u64..(u64::MAX - 36) / 2),
        arb_u64(),
        arb_u128(),
        arb_u64(),
        arb_kind(),
        arb_u256(),
        arb_input(),
    )
        .prop_map(
            |(chain_id, nonce, gas_price, gas_limit, to, value, input)| {
                Transaction::from(LegacyTx {
                    chain_id: chain_id.map(ChainId),
                    nonce,
                    gas_price,
                    gas_limit,
                    to,
                    value,
                    input,
                })
            },
        );
    let eip2930 = (
        arb_u64(),
        arb_u64(),
        arb_u128(),
        arb_u64(),
        arb_kind(),
        arb_u256(),
        arb_input(),
        arb_access_list(),
    )
        .prop_map(
            |(chain_id, nonce, gas_price, gas_limit, to, value, input, access_list)| {
                Transaction::from(Eip2930Tx {
                    chain_id: ChainId(chain_id),
                    nonce,
                    gas_price,
                    gas_limit,
                    to,
                    value,
                    input,
                    access_list,
                })
            },
        );
    let eip1559 = (
        (arb_u64(), arb_u64(), arb_u128(), arb_u128(), arb_u64()),
        (arb_kind(), arb_u256(), arb_input(), arb_access_list()),
    )
        .prop_map(
            |((chain_id, nonce, tip, max_fee, gas_limit), (to, value, input, access_list))| {
                Transaction::from(Eip1559Tx {
                    chain_id: ChainId(chain_id),
                    nonce,
                    max_priority_fee_per_gas: tip,
                    max_fee_per_gas: max_fee,
                    gas_limit,
                    to,
                    value,
                    input,
                    access_list,
                })
            },
        );
    prop_oneof![legacy, eip2930, eip1559]
}

fn arb_signed() -> impl Strategy<Value = (SignedTransaction, Address)> {
    (arb_tx(), arb_secret()).prop_map(|(tx, secret)| {
        (
            tx.sign(&secret).expect("valid key and encodable chain id"),
            address_of(&secret).unwrap(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sign_encode_decode_recover_round_trip((signed, sender) in arb_signed()) {
        let decoded = SignedTransaction::decode_with(signed.raw(), &permissive()).unwrap();
        prop_assert_eq!(&decoded, &signed);
        prop_assert_eq!(decoded.hash(), keccak256(signed.raw()));
        prop_assert_eq!(decoded.recover_sender().unwrap(), sender);
        let rebuilt = SignedTransaction::new(decoded.tx().clone(), *decoded.signature()).unwrap();
        prop_assert_eq!(rebuilt.raw(), signed.raw());
        let strict = SignedTransaction::decode(signed.raw());
        if signed.chain_id().is_some() {
            prop_assert_eq!(strict.unwrap(), signed);
        } else {
            prop_assert_eq!(strict, Err(TxError::MissingChainId));
        }
    }

    #[test]
    fn every_truncation_is_an_error((signed, _) in arb_signed()) {
        let raw = signed.raw();
        for len in 0..raw.len() {
            prop_assert!(SignedTransaction::decode_with(&raw[..len], &permissive()).is_err());
        }
    }

    /// A flipped bit either fails to decode or yields a transaction that is itself canonical:
    /// it re-encodes to exactly the flipped bytes. Never a panic.
    #[test]
    fn bit_flips_never_panic(
        (signed, sender) in arb_signed(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut raw = signed.raw().to_vec();
        for (index, bit) in &flips {
            let at = index.index(raw.len());
            raw[at] ^= 1 << bit;
        }
        if let Ok(decoded) = SignedTransaction::decode_with(&raw, &permissive()) {
            let rebuilt = SignedTransaction::new(decoded.tx().clone(), *decoded.signature()).unwrap();
            prop_assert_eq!(rebuilt.raw().as_ref(), raw.as_slice());
            prop_assert_eq!(decoded.hash(), keccak256(&raw));
            if raw != signed.raw().as_ref() {
                // A changed transaction cannot keep both its hash and its sender.
                prop_assert!(decoded.recover_sender() != Ok(sender));
            }
        }
    }

    /// Arbitrary bytes never panic the decoder, and whatever it accepts is canonical: the
    /// transaction re-encodes to exactly those bytes and hashes them.
    #[test]
    fn arbitrary_bytes_never_panic(prefix in 0u8..=0xff, body in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut raw = vec![prefix];
        raw.extend(body);
        if let Ok(decoded) = SignedTransaction::decode_with(&raw, &permissive()) {
            let rebuilt = SignedTransaction::new(decoded.tx().clone(), *decoded.signature()).unwrap();
            prop_assert_eq!(rebuilt.raw().as_ref(), raw.as_slice());
            prop_assert_eq!(decoded.hash(), keccak256(&raw));
        }
    }

    #[test]
    fn oversize_is_rejected_before_parsing((signed, _) in arb_signed(), extra in 1usize..4096) {
        let mut raw = signed.raw().to_vec();
        raw.resize(MAX_TX_BYTES + extra, 0);
        prop_assert_eq!(
            SignedTransaction::decode(&raw),
            Err(TxError::Oversize { len: MAX_TX_BYTES + extra, max: MAX_TX_BYTES })
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Parallel recovery returns exactly what sequential recovery returns, in order, including
    /// the failures of tampered signatures.
    #[test]
    fn batch_recovery_equals_sequential(
        txs in prop::collection::vec(arb_signed(), 0..200),
        tamper in prop::collection::vec(any::<bool>(), 200),
    ) {
        let txs: Vec<SignedTransaction> = txs
            .into_iter()
            .zip(&tamper)
            .enumerate()
            .map(|(i, ((signed, _), &tamper))| {
                if !tamper {
                    return signed;
                }
                let sig = Signature::new(U256::from(i as u64 + 1), signed.signature().s(), signed.signature().v());
                SignedTransaction::new(signed.tx().clone(), sig).unwrap()
            })
            .collect();
        let sequential = recover_all(&txs);
        prop_assert_eq!(recover_batch(&txs), sequential.clone());
        let raws: Vec<Bytes> = txs.iter().map(SignedTransaction::encode).collect();
        let decoded: Vec<Result<Address, TxError>> = decode_recover_batch(&raws, &permissive())
            .into_iter()
            .map(|r| r.map(|r| r.sender()))
            .collect();
        prop_assert_eq!(decoded, sequential);
    }
}
