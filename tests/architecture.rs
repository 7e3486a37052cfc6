//! The layer order of docs/architecture.md, enforced: a module of the library
//! may use the modules above it in [`LAYERS`], never one below, and `gent` and
//! `llm` (the two generators) never use each other. A new top-level module
//! fails here until it is given its place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's top-level modules, in data-flow order: each row may use the
/// rows before it. Modules on one row are siblings and may not use each other.
const LAYERS: &[&[&str]] = &[
    &["trace"],
    &["container"],
    &["otlp"],
    &["io"],
    &["tabular"],
    &["nn"],
    &["gent", "llm"],
    &["codec"],
    &["fidelity"],
    &["connections"],
    &["metrics"],
    &["window"],
    &["receiver"],
    &["packet"],
    &["export"],
    &["config"],
    &["pipeline"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
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

/// The source without its `//` comments (doc comments name other modules freely).
fn code(source: &str) -> String {
    source.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn identifier(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::`, including each
/// item of a `crate::{a, b::c}` group.
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        used.insert(identifier(group[start..i].trim()).to_string());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.insert(identifier(group[start..i].trim()).to_string());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(identifier(rest).to_string());
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

/// The library's modules as lib.rs declares them.
fn declared(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    code(&lib).lines().filter_map(|l| l.trim().strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';').to_string()).collect()
}

#[test]
fn every_module_has_a_place_in_the_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let listed: BTreeSet<String> = LAYERS.iter().flat_map(|row| row.iter().map(|m| m.to_string())).collect();
    assert_eq!(declared(&src), listed, "lib.rs's modules and the layer order of docs/architecture.md differ");
}

#[test]
fn no_module_uses_one_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        // The binary (main.rs, cli/) sits below every module of the library.
        let Some(own) = rank(&top) else { continue };
        for used in crate_uses(&code(&std::fs::read_to_string(&file).unwrap())) {
            if used == top {
                continue;
            }
            let allowed = rank(&used).is_some_and(|r| r < own);
            if !allowed {
                upward.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports against the layer order (docs/architecture.md):\n{}", upward.join("\n"));
}

#[test]
fn the_scanner_finds_grouped_and_nested_uses() {
    let uses = crate_uses(&code("use crate::{io::{self, Format}, trace};\nlet x = crate::gent::pack(); // crate::llm"));
    assert_eq!(uses, ["gent", "io", "trace"].iter().map(|s| s.to_string()).collect());
}
