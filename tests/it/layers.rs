//! The layer list in `docs/architecture.md` ("Layers") holds for every file under `src/`: no
//! module names (`crate::<module>`, outside comments) a module of a higher layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Layer of each top-level module, from the numbered list under "## Layers".
fn layers(doc: &str) -> HashMap<String, usize> {
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("docs/architecture.md has a Layers section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut layers = HashMap::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.trim().parse::<usize>() else {
            continue;
        };
        // Backticked names before any parenthesis are the layer's modules.
        let names = rest.split('(').next().unwrap_or("");
        for module in names.split('`').skip(1).step_by(2) {
            layers.insert(module.to_string(), layer);
        }
    }
    layers
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for the crate roots).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The leading module name of a path (`chain` of `chain::app::CnApp`).
fn leading_name(path: &str) -> &str {
    let path = path.trim_start();
    let end = path
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .unwrap_or(path.len());
    &path[..end]
}

/// Every top-level module the code of `text` (comments left out) names, with its line:
/// `crate::<name>`, and each item of a group `crate::{<name>::…, <name>, …}` even when the
/// group spans lines.
fn named_modules(text: &str) -> Vec<(usize, &str)> {
    let code: Vec<&str> = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect();
    let mut found = Vec::new();
    let mut group: Option<usize> = None; // brace depth inside a `crate::{` group
    for (n, line) in code.iter().enumerate() {
        let mut rest: &str = line;
        if let Some(depth) = group.as_mut() {
            rest = group_items(rest, depth, n, &mut found);
            if *depth == 0 {
                group = None;
            }
        }
        while let Some(at) = rest.find("crate::") {
            let before = &rest[..at];
            let after = &rest[at + "crate::".len()..];
            rest = after;
            // Not a longer identifier that merely ends in `crate` (`my_crate::`).
            if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(items) = after.strip_prefix('{') {
                let mut depth = 1;
                rest = group_items(items, &mut depth, n, &mut found);
                if depth > 0 {
                    group = Some(depth);
                }
            } else {
                found.push((n, leading_name(after)));
            }
        }
    }
    found.retain(|(_, name)| !name.is_empty() && *name != "self");
    found
}

/// Walks `text` inside a `crate::{…}` group at brace `depth`: records the name it starts
/// with and the name after each comma at depth 1, and returns what follows the group's closing brace (empty if it is
/// still open).
fn group_items<'a>(
    text: &'a str,
    depth: &mut usize,
    line: usize,
    found: &mut Vec<(usize, &'a str)>,
) -> &'a str {
    if *depth == 1 {
        found.push((line, leading_name(text)));
    }
    for (i, c) in text.char_indices() {
        match c {
            '{' => *depth += 1,
            '}' => {
                *depth -= 1;
                if *depth == 0 {
                    return &text[i + 1..];
                }
            }
            ',' if *depth == 1 => found.push((line, leading_name(&text[i + 1..]))),
            _ => {}
        }
    }
    ""
}

/// Each file's crossings: (file, line, from module, to module).
fn crossings(src: &Path, layers: &HashMap<String, usize>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let own = *layers
            .get(&module)
            .unwrap_or_else(|| panic!("module `{module}` is missing from the Layers list"));
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, target) in named_modules(&text) {
            if let Some(&layer) = layers.get(target) {
                if layer > own {
                    found.push(format!(
                        "{}:{}: {module} (layer {own}) uses {target} (layer {layer})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn no_module_uses_a_module_above_it() {
    let doc = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let layers = layers(&doc);
    assert!(layers.len() >= 15, "layers parsed: {layers:?}");
    let found = crossings(&repo().join("src"), &layers);
    assert!(found.is_empty(), "upward imports:\n{}", found.join("\n"));
}

/// The check sees an upward import: a copy of `src/` where the block log's module names the
/// CN application fails it.
#[test]
fn an_upward_import_is_found() {
    let doc = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let layers = layers(&doc);
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::write(
        storage.join("mod.rs"),
        "//! crate::chain in a comment is fine\nuse crate::types::Height;\nuse crate::chain::app::CnApp; // not fine\n\
         use crate::{types::Round, rpc::X};\nuse crate::{\n    types::Y,\n    node::{Z, W},\n};\n",
    )
    .unwrap();
    let found = crossings(dir.path(), &layers);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].contains(":3: storage (layer 4) uses chain (layer 7)"));
    assert!(
        found[1].contains(":4: storage (layer 4) uses rpc"),
        "{found:?}"
    );
    assert!(
        found[2].contains(":7: storage (layer 4) uses node"),
        "{found:?}"
    );
}

/// Names in grouped and multi-line imports are seen; comments and `self` are not.
#[test]
fn grouped_imports_name_each_module() {
    let text = "use crate::{a::B, c, self};\nuse crate::{\n    d::{E, F},\n    g,\n}; // crate::h\nlet x = crate::i::j();\n";
    let names: Vec<(usize, &str)> = named_modules(text);
    assert_eq!(
        names,
        vec![(0, "a"), (0, "c"), (2, "d"), (3, "g"), (5, "i")]
    );
}
