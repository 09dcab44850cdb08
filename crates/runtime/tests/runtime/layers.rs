//! The runtime's modules form layers (listed in src/lib.rs): a module uses
//! only modules of its own layer or of the layers below, and the uses form
//! no cycle. Checked from the `crate::` paths in each module's source.

use std::collections::BTreeMap;
use std::path::Path;

/// Module name to layer number, from the `//! N. ` lines of lib.rs.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, list)) = rest.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.parse::<usize>() else {
            continue;
        };
        let names = list.split_once(':').map_or(list, |(names, _)| names);
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            if !name.is_empty() {
                out.insert(name.to_string(), layer);
            }
        }
    }
    out
}

/// The source without comments (line comments, doc comments included).
fn code_only(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules named by `crate::` paths in `source`.
fn uses(source: &str) -> Vec<String> {
    let code = code_only(source);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        out.push(ident(&group[item_start..i]));
                        item_start = i + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|name| !name.is_empty() && name != "self");
    out.sort();
    out.dedup();
    out
}

/// What is wrong with `graph` (module to the modules it uses) under
/// `layers`: a use of a higher layer, a module in no layer, a cycle.
fn problems(
    layers: &BTreeMap<String, usize>,
    graph: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut found = Vec::new();
    for (module, used) in graph {
        let Some(&own) = layers.get(module) else {
            found.push(format!("`{module}` is in no layer of lib.rs"));
            continue;
        };
        for other in used {
            match layers.get(other) {
                Some(&layer) if layer > own => found.push(format!(
                    "`{module}` (layer {own}) uses `{other}` (layer {layer})"
                )),
                Some(_) => {}
                None => found.push(format!("`{module}` uses `{other}`, which is in no layer")),
            }
        }
    }
    // Depth-first search for a cycle: 1 = on the current path, 2 = done.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, Vec<String>>,
        mark: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        found: &mut Vec<String>,
    ) {
        match mark.get(module) {
            Some(2) => return,
            Some(1) => {
                let from = path.iter().position(|m| *m == module).unwrap_or(0);
                found.push(format!("cycle: {} -> {module}", path[from..].join(" -> ")));
                return;
            }
            _ => {}
        }
        mark.insert(module, 1);
        path.push(module);
        for other in graph.get(module).into_iter().flatten() {
            visit(other, graph, mark, path, found);
        }
        path.pop();
        mark.insert(module, 2);
    }
    let mut mark = BTreeMap::new();
    for module in graph.keys() {
        visit(module, graph, &mut mark, &mut Vec::new(), &mut found);
    }
    found
}

fn read_tree(dir: &Path, out: &mut String) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("module directory")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("module source"));
            out.push('\n');
        }
    }
}

#[test]
fn runtime_modules_use_only_their_layer_and_the_ones_below_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let layers = layers(&lib);
    assert!(layers.len() > 20, "lib.rs lists the layers: {layers:?}");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if stem == "lib" {
            continue;
        }
        let mut source = String::new();
        if path.is_dir() {
            read_tree(&path, &mut source);
        } else {
            source = std::fs::read_to_string(&path).expect("module source");
        }
        let mut used = uses(&source);
        used.retain(|m| m != stem);
        graph.insert(stem.to_string(), used);
    }
    // `glob` is the shm crate's, re-exported: it has no file here.
    graph.insert("glob".to_string(), Vec::new());
    for module in layers.keys() {
        assert!(
            graph.contains_key(module),
            "lib.rs lists `{module}`, which has no source"
        );
    }
    let found = problems(&layers, &graph);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_layer_check_finds_an_upward_use_and_a_cycle() {
    let lib = "//! 1. `sys`, `msg`: the ground.\n//! 2. `signals`: handlers.\n";
    let layers = layers(lib);
    let source = "use crate::{signals, sys::{self, Errno}};\n// crate::ignored\nfn f() { crate::msg::Msg::new(); }\n";
    assert_eq!(uses(source), ["msg", "signals", "sys"]);
    let graph: BTreeMap<String, Vec<String>> = [
        ("sys", vec!["signals"]),
        ("msg", vec!["sys"]),
        ("signals", vec!["msg"]),
    ]
    .into_iter()
    .map(|(m, u)| (m.to_string(), u.into_iter().map(String::from).collect()))
    .collect();
    let found = problems(&layers, &graph);
    assert!(
        found
            .iter()
            .any(|p| p == "`sys` (layer 1) uses `signals` (layer 2)"),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.starts_with("cycle: ")), "{found:?}");
}
