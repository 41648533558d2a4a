//! Kaon's BLS module against the Ethereum BLS12-381 test vectors (ethereum/bls12-381-tests,
//! JSON output, one file per case; see `tests/vectors/bls/README.md`).
//!
//! Every `*.json` file under `tests/vectors/bls/<family>/` is one case. Each family's test
//! checks all its cases, collects every mismatch (named by case file) and fails on any, and
//! fails when the family has no case at all.

use alloy_primitives::hex;
use kaon::crypto::bls::{
    aggregate_signatures, batch_verify, fast_aggregate_verify, BatchFailure, PublicKey, SecretKey,
    Signature, SignedMessage,
};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// The case files of one family, sorted by name.
fn case_files(family: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/bls")
        .join(family);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read vector directory {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// Runs `check` on every case of `family`; panics listing every failing case file, or when the
/// family has no case.
fn run_family(family: &str, check: fn(&Value) -> Result<(), String>) {
    let files = case_files(family);
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path)
            .display()
            .to_string();
        let outcome = fs::read_to_string(path)
            .map_err(|e| format!("unreadable: {e}"))
            .and_then(|text| {
                serde_json::from_str::<Value>(&text).map_err(|e| format!("invalid JSON: {e}"))
            })
            .and_then(|case| check(&case));
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(
        !files.is_empty(),
        "no `{family}` vectors found under tests/vectors/bls/{family}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} `{family}` vectors failed:\n  {}",
        failures.len(),
        files.len(),
        failures.join("\n  ")
    );
    println!("bls `{family}` vectors: {} cases passed", files.len());
}

// --- reading the JSON --------------------------------------------------------------------

fn field<'a>(value: &'a Value, key: &str) -> Result<&'a Value, String> {
    value
        .get(key)
        .ok_or_else(|| format!("missing field `{key}`"))
}

fn hex_str(value: &Value) -> Result<Vec<u8>, String> {
    let s = value
        .as_str()
        .ok_or_else(|| format!("expected a hex string, got {value}"))?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("hex string without 0x prefix: {s}"))?;
    hex::decode(digits).map_err(|e| format!("bad hex {s}: {e}"))
}

fn hex_list(value: &Value) -> Result<Vec<Vec<u8>>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("expected a list, got {value}"))?
        .iter()
        .map(hex_str)
        .collect()
}

fn expected_bool(case: &Value) -> Result<bool, String> {
    let output = field(case, "output")?;
    output
        .as_bool()
        .ok_or_else(|| format!("expected a boolean output, got {output}"))
}

/// Expected output that is either a hex string or `null`.
fn expected_bytes_or_null(case: &Value) -> Result<Option<Vec<u8>>, String> {
    let output = field(case, "output")?;
    if output.is_null() {
        Ok(None)
    } else {
        hex_str(output).map(Some)
    }
}

/// Decodes every key; `None` when any is refused (invalid, infinity or outside the subgroup).
fn decode_public_keys(keys: &[Vec<u8>]) -> Option<Vec<PublicKey>> {
    keys.iter().map(|k| PublicKey::from_bytes(k).ok()).collect()
}

// --- the families ------------------------------------------------------------------------

/// `sign`: the key decodes and signs to exactly the expected signature, or (expected `null`)
/// the key is refused.
fn check_sign(case: &Value) -> Result<(), String> {
    let input = field(case, "input")?;
    let privkey = hex_str(field(input, "privkey")?)?;
    let message = hex_str(field(input, "message")?)?;
    // The generator writes the key as a big-endian integer; restore the 32-byte width.
    if privkey.len() > 32 {
        return Err(format!("private key of {} bytes", privkey.len()));
    }
    let mut key_bytes = [0u8; 32];
    key_bytes[32 - privkey.len()..].copy_from_slice(&privkey);
    let key = SecretKey::from_bytes(&key_bytes);
    match (expected_bytes_or_null(case)?, key) {
        (None, Err(_)) => Ok(()),
        (None, Ok(_)) => Err("expected the key to be refused, but from_bytes accepted it".into()),
        (Some(_), Err(e)) => Err(format!("expected a signature, but from_bytes failed: {e}")),
        (Some(expected), Ok(key)) => {
            let sig = key.sign(&message);
            let got = sig.to_bytes().0;
            if got[..] != expected[..] {
                return Err(format!(
                    "signature mismatch:\n    expected 0x{}\n    got      0x{}",
                    hex::encode(&expected),
                    hex::encode(got)
                ));
            }
            if !sig.verify(&key.public_key(), &message) {
                return Err("the (matching) signature does not verify under its own key".into());
            }
            Ok(())
        }
    }
}

/// `verify`: a key or signature that fails to decode must be an expected `false`; otherwise
/// `verify` returns exactly the expected result.
fn check_verify(case: &Value) -> Result<(), String> {
    let input = field(case, "input")?;
    let pubkey = hex_str(field(input, "pubkey")?)?;
    let message = hex_str(field(input, "message")?)?;
    let signature = hex_str(field(input, "signature")?)?;
    let expected = expected_bool(case)?;
    let pk = PublicKey::from_bytes(&pubkey);
    let sig = Signature::from_bytes(&signature);
    let got = match (&pk, &sig) {
        (Ok(pk), Ok(sig)) => sig.verify(pk, &message),
        _ => false,
    };
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "expected {expected}, got {got} (public key decode: {}, signature decode: {})",
            decode_outcome(&pk),
            decode_outcome(&sig)
        ))
    }
}

fn decode_outcome<T, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused ({e})"),
    }
}

/// `aggregate`: the aggregate of the decoded signatures equals the expected one; an expected
/// `null` must come from an input that fails to decode or from our aggregate refusing (empty
/// input).
fn check_aggregate(case: &Value) -> Result<(), String> {
    let inputs = hex_list(field(case, "input")?)?;
    let decoded: Result<Vec<Signature>, _> =
        inputs.iter().map(|s| Signature::from_bytes(s)).collect();
    let aggregate = decoded.and_then(|sigs| aggregate_signatures(&sigs));
    match (expected_bytes_or_null(case)?, aggregate) {
        (None, Err(_)) => Ok(()),
        (None, Ok(agg)) => Err(format!(
            "expected no aggregate (null), got 0x{}",
            hex::encode(agg.to_bytes().0)
        )),
        (Some(_), Err(e)) => Err(format!("expected an aggregate, got error: {e}")),
        (Some(expected), Ok(agg)) => {
            let got = agg.to_bytes().0;
            if got[..] == expected[..] {
                Ok(())
            } else {
                Err(format!(
                    "aggregate mismatch:\n    expected 0x{}\n    got      0x{}",
                    hex::encode(&expected),
                    hex::encode(got)
                ))
            }
        }
    }
}

/// `fast_aggregate_verify`: any key or the signature failing to decode must be an expected
/// `false`; otherwise `fast_aggregate_verify` returns exactly the expected result.
fn check_fast_aggregate_verify(case: &Value) -> Result<(), String> {
    let input = field(case, "input")?;
    let pubkeys = hex_list(field(input, "pubkeys")?)?;
    let message = hex_str(field(input, "message")?)?;
    let signature = hex_str(field(input, "signature")?)?;
    let expected = expected_bool(case)?;
    let pks = decode_public_keys(&pubkeys);
    let sig = Signature::from_bytes(&signature);
    let got = match (&pks, &sig) {
        (Some(pks), Ok(sig)) => fast_aggregate_verify(pks, &message, sig),
        _ => false,
    };
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "expected {expected}, got {got} ({} keys, all decoded: {}, signature decode: {})",
            pubkeys.len(),
            pks.is_some(),
            decode_outcome(&sig)
        ))
    }
}

/// `batch_verify`: any key or signature failing to decode must be an expected `false`;
/// otherwise `batch_verify` is `Ok` exactly when `true` is expected, and a failing batch
/// names exactly the claims that fail one by one.
fn check_batch_verify(case: &Value) -> Result<(), String> {
    let input = field(case, "input")?;
    let pubkeys = hex_list(field(input, "pubkeys")?)?;
    let messages = hex_list(field(input, "messages")?)?;
    let signatures = hex_list(field(input, "signatures")?)?;
    let expected = expected_bool(case)?;
    if pubkeys.len() != messages.len() || pubkeys.len() != signatures.len() {
        return Err(format!(
            "malformed case: {} keys, {} messages, {} signatures",
            pubkeys.len(),
            messages.len(),
            signatures.len()
        ));
    }
    let items: Option<Vec<SignedMessage>> = pubkeys
        .iter()
        .zip(&messages)
        .zip(&signatures)
        .map(|((pk, msg), sig)| {
            Some(SignedMessage {
                public_key: PublicKey::from_bytes(pk).ok()?,
                message: msg.clone(),
                signature: Signature::from_bytes(sig).ok()?,
            })
        })
        .collect();
    let Some(items) = items else {
        return if expected {
            Err("expected true, but a key or signature fails to decode".into())
        } else {
            Ok(())
        };
    };
    let result = batch_verify(&items);
    if result.is_ok() != expected {
        return Err(format!("expected {expected}, got {result:?}"));
    }
    let one_by_one: Vec<usize> = (0..items.len()).filter(|&i| !items[i].verify()).collect();
    let named = match &result {
        Ok(()) => Vec::new(),
        Err(BatchFailure { bad }) => bad.clone(),
    };
    if named != one_by_one {
        return Err(format!(
            "batch names bad claims {named:?}, but one-by-one verification fails {one_by_one:?}"
        ));
    }
    Ok(())
}

#[test]
fn sign_vectors() {
    run_family("sign", check_sign);
}

#[test]
fn verify_vectors() {
    run_family("verify", check_verify);
}

#[test]
fn aggregate_vectors() {
    run_family("aggregate", check_aggregate);
}

#[test]
fn fast_aggregate_verify_vectors() {
    run_family("fast_aggregate_verify", check_fast_aggregate_verify);
}

#[test]
fn batch_verify_vectors() {
    run_family("batch_verify", check_batch_verify);
}
