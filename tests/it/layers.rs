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

/// Every `crate::<name>` a line of code (not a comment) names.
fn named_modules(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // Not a longer identifier that merely ends in `crate` (`my_crate::`).
            !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, m)| {
            let rest = &code[at + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
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
        for (n, line) in text.lines().enumerate() {
            for target in named_modules(line) {
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
        "//! crate::chain in a comment is fine\nuse crate::types::Height;\nuse crate::chain::app::CnApp; // not fine\n",
    )
    .unwrap();
    let found = crossings(dir.path(), &layers);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(":3: storage (layer 4) uses chain (layer 7)"));
}
