//! Dependencies between the top-level modules of `src/` point one way (issue 16,
//! acceptance 1). Reads every `.rs` file under `src/`, collects the `crate::` paths it uses
//! (grouped `use crate::{a::x, b}` forms and `super::` paths that climb to the crate root
//! included; comments and string literals ignored), builds the graph between top-level
//! modules — a folder or a `.rs` file directly in `src/`; `main.rs` and `lib.rs` are the
//! wiring and are left out — and fails on a cycle, printing each cycle and the file and
//! line of every reference that makes up each of its edges.
//!
//! A name after `crate::` that is not a top-level module (an item re-exported at the root)
//! is not followed. `NEXUS_CYCLES_SRC=<dir>` checks another tree (e.g. an exported commit).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A source file: its path relative to `src/` (`/`-separated) and its text.
struct Source {
    rel: String,
    text: String,
}

/// One reference from a file in module `from` to top-level module `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    from: String,
    to: String,
    /// `src/…` path of the file.
    file: String,
    /// 1-based.
    line: usize,
    /// The source line, trimmed.
    code: String,
}

/// Edges of the module graph, each with the references that make it.
type Graph = BTreeMap<(String, String), Vec<Reference>>;

#[test]
fn no_import_cycles_between_top_level_modules_of_src() {
    let root = std::env::var_os("NEXUS_CYCLES_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let sources = read_tree(&root);
    assert!(
        sources.iter().any(|s| s.rel == "main.rs"),
        "{} does not look like nexus's src/",
        root.display()
    );
    let graph = graph(&sources);
    let cycles = cycles(&graph);
    if !cycles.is_empty() {
        panic!(
            "import cycles between top-level modules of {}:\n\n{}",
            root.display(),
            report(&graph, &cycles)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Reading the tree

/// Every `.rs` file under `root`, sorted by path.
fn read_tree(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push(Source { rel, text });
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// The module path of a file relative to `src/`: `server/worker.rs` → `[server, worker]`,
/// `server/mod.rs` → `[server]`, `proxy.rs` → `[proxy]`; `None` for the crate roots.
fn module_path(rel: &str) -> Option<Vec<String>> {
    if rel == "main.rs" || rel == "lib.rs" {
        return None;
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    (!parts.is_empty()).then_some(parts)
}

/// The top-level modules a tree has: folders directly in `src/` and `.rs` files there
/// (crate roots excluded).
fn top_level_modules(sources: &[Source]) -> BTreeSet<String> {
    sources
        .iter()
        .filter_map(|s| module_path(&s.rel))
        .map(|path| path[0].clone())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Lexing: just enough Rust to find paths outside comments and literals

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// Tokens with their 1-based line. Comments, string/char/byte literals are skipped;
/// `$crate` lexes as `crate`.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(&chars, i + 1, &mut line),
            'r' | 'b' if raw_string_start(&chars, i).is_some() => {
                let (hashes, quote) = raw_string_start(&chars, i).unwrap();
                i = skip_raw_string(&chars, quote + 1, hashes, &mut line);
            }
            'b' if at(i + 1) == '"' => i = skip_string(&chars, i + 2, &mut line),
            'b' if at(i + 1) == '\'' => i = skip_char(&chars, i + 1),
            '\'' => {
                // A char literal ('x', '\n', '\u{1F600}') or a lifetime/label ('a).
                if at(i + 1) == '\\' || at(i + 2) == '\'' {
                    i = skip_char(&chars, i);
                } else {
                    i += 1;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    out.push((Tok::Other, line));
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let word = word.strip_prefix("r#").map(str::to_string).unwrap_or(word);
                out.push((Tok::Ident(word), line));
            }
            '$' if at(i + 1) == 'c' => i += 1, // `$crate` → `crate`
            ':' if at(i + 1) == ':' => {
                out.push((Tok::PathSep, line));
                i += 2;
            }
            '{' => {
                out.push((Tok::Open, line));
                i += 1;
            }
            '}' => {
                out.push((Tok::Close, line));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, line));
                i += 1;
            }
            _ => {
                out.push((Tok::Other, line));
                i += 1;
            }
        }
    }
    out
}

/// Past the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            '\n' => {
                *line += 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    i
}

/// `r"`, `r#"`, `br##"`…: the number of `#` and the index of the opening quote.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    // Not the tail of an identifier like `bar"…`: only at a token start.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    j += 1;
    let hashes_start = j;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((j - hashes_start, j))
}

fn skip_raw_string(chars: &[char], mut i: usize, hashes: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        if chars[i] == '\n' {
            *line += 1;
        }
        i += 1;
    }
    i
}

/// Past a char literal whose opening quote is at `i`.
fn skip_char(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != '\'' {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

// ---------------------------------------------------------------------------------------
// Paths

/// The top-level names a path names right after the crate root, starting at token `i`
/// (just past `crate ::`), each with the line it is on: `a` for `a::x`, `[a, b]` for
/// `{a::x, b}`; `self` and `*` name nothing.
fn root_names(toks: &[(Tok, usize)], i: usize) -> Vec<(String, usize)> {
    match toks.get(i) {
        Some((Tok::Ident(name), line)) if name != "self" => vec![(name.clone(), *line)],
        Some((Tok::Open, _)) => {
            let mut names = Vec::new();
            let mut depth = 0;
            let mut item_start = true;
            for (tok, line) in &toks[i + 1..] {
                match tok {
                    Tok::Open => depth += 1,
                    Tok::Close if depth == 0 => break,
                    Tok::Close => depth -= 1,
                    Tok::Comma if depth == 0 => {
                        item_start = true;
                        continue;
                    }
                    Tok::Ident(name) if depth == 0 && item_start && name != "self" => {
                        names.push((name.clone(), *line));
                    }
                    _ => {}
                }
                item_start = false;
            }
            names
        }
        _ => Vec::new(),
    }
}

/// Every top-level module the file at `rel` refers to, with the line of each reference.
/// References to the file's own top-level module are left out.
fn references(rel: &str, text: &str, modules: &BTreeSet<String>) -> Vec<(String, usize)> {
    let Some(file_path) = module_path(rel) else {
        return Vec::new();
    };
    let own = &file_path[0];
    let toks = lex(text);
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: the brace depth each was opened at.
    let mut inline_mods: Vec<i64> = Vec::new();
    let mut depth: i64 = 0;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if inline_mods.last() == Some(&depth) {
                    inline_mods.pop();
                }
            }
            Tok::Ident(word) if word == "mod" => {
                if let (Some((Tok::Ident(_), _)), Some((Tok::Open, _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline_mods.push(depth);
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(word)
                if word == "crate" && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) =>
            {
                out.extend(root_names(&toks, i + 2));
                i += 2;
                continue;
            }
            Tok::Ident(word) if word == "super" => {
                // Count the run of `super ::`; only a run that climbs exactly to the crate
                // root names top-level modules (a shorter one stays inside this module).
                let mut supers = 0;
                let mut j = i;
                while matches!(&toks.get(j), Some((Tok::Ident(w), _)) if w == "super")
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                {
                    supers += 1;
                    j += 2;
                }
                if supers == file_path.len() + inline_mods.len() {
                    out.extend(root_names(&toks, j));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.retain(|(name, _)| name != own && modules.contains(name));
    out
}

/// The module graph of a tree.
fn graph(sources: &[Source]) -> Graph {
    let modules = top_level_modules(sources);
    let mut graph = Graph::new();
    for source in sources {
        let Some(path) = module_path(&source.rel) else {
            continue;
        };
        let lines: Vec<&str> = source.text.lines().collect();
        for (to, line) in references(&source.rel, &source.text, &modules) {
            graph
                .entry((path[0].clone(), to.clone()))
                .or_default()
                .push(Reference {
                    from: path[0].clone(),
                    to,
                    file: format!("src/{}", source.rel),
                    line,
                    code: lines.get(line - 1).unwrap_or(&"").trim().to_string(),
                });
        }
    }
    graph
}

// ---------------------------------------------------------------------------------------
// Cycles

/// The cycles of the graph, each as its modules in order (the first not repeated at the
/// end), smallest rotation first: for every edge inside a strongly connected component,
/// the shortest cycle through it. Deduplicated; empty when the graph is acyclic.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        next.entry(from).or_default().insert(to);
    }
    let mut found = BTreeSet::new();
    for (from, to) in graph.keys() {
        // Shortest path back from `to` to `from`, breadth first.
        let mut back: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([to.as_str()]);
        let mut seen = BTreeSet::from([to.as_str()]);
        while let Some(node) = queue.pop_front() {
            if node == from {
                break;
            }
            for &n in next.get(node).into_iter().flatten() {
                if seen.insert(n) {
                    back.insert(n, node);
                    queue.push_back(n);
                }
            }
        }
        if !seen.contains(from.as_str()) {
            continue;
        }
        let mut cycle = vec![from.to_string()];
        let mut path = vec![from.as_str()];
        let mut node = from.as_str();
        while node != to {
            node = back[node];
            path.push(node);
        }
        cycle.extend(path[1..].iter().rev().map(|s| s.to_string()));
        let smallest = (0..cycle.len()).min_by_key(|&k| &cycle[k]).unwrap();
        cycle.rotate_left(smallest);
        found.insert(cycle);
    }
    found.into_iter().collect()
}

/// Each cycle, and under each of its edges the references that make it.
fn report(graph: &Graph, cycles: &[Vec<String>]) -> String {
    const SHOWN: usize = 8;
    let mut out = String::new();
    for cycle in cycles {
        let _ = writeln!(out, "cycle: {} → {}", cycle.join(" → "), cycle[0]);
        for k in 0..cycle.len() {
            let (from, to) = (&cycle[k], &cycle[(k + 1) % cycle.len()]);
            let refs = &graph[&(from.clone(), to.clone())];
            let _ = writeln!(out, "  {from} → {to} ({} references):", refs.len());
            for r in refs.iter().take(SHOWN) {
                let _ = writeln!(out, "    {}:{}  {}", r.file, r.line, r.code);
            }
            if refs.len() > SHOWN {
                let _ = writeln!(out, "    … and {} more", refs.len() - SHOWN);
            }
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// The checker itself, on small in-memory trees

fn tree(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(rel, text)| Source {
            rel: rel.to_string(),
            text: text.to_string(),
        })
        .collect()
}

fn edges(graph: &Graph) -> Vec<(&str, &str)> {
    graph
        .keys()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

#[test]
fn an_acyclic_tree_passes_and_every_path_form_is_found() {
    let sources = tree(&[
        ("main.rs", "use nexus::proxy;\nmod x { use crate::proxy::P; }\n"),
        ("lib.rs", "pub mod http;\npub mod proxy;\npub mod server;\npub mod conn;\n"),
        // Grouped, nested groups, `self` inside a group, and a plain path in an expression.
        (
            "proxy.rs",
            "use crate::{\n    conn::{self, Conn},\n    http::Head,\n};\nfn f() { crate::http::parse(); }\n",
        ),
        // `super::` from a folder's mod.rs climbs to the root in one step.
        ("server/mod.rs", "pub mod worker;\nuse super::proxy;\n"),
        // Two steps from a file inside a folder; one step stays inside `server`.
        (
            "server/worker.rs",
            "use super::super::http::Head;\nuse super::Worker;\nuse crate::server::x;\n",
        ),
        // Comments, strings, raw strings, chars and lifetimes mention paths that do not count.
        (
            "conn/mod.rs",
            "// use crate::server::X;\n/* crate::proxy:: /* nested */ crate::server */\n\
             const S: &str = \"crate::server::x\";\nconst R: &str = r#\"crate::proxy\"#;\n\
             const C: char = '\\'';\nfn g<'a>(x: &'a str) -> &'a str { x }\nuse crate::http::Head;\n",
        ),
        // Inline `mod tests`: `super::super` from inside it in `http/mod.rs`… is the root.
        ("http/mod.rs", "mod tests {\n    use super::*;\n    use super::super::nothing_here;\n}\n"),
        // `crate::` names that are not top-level modules (re-exports) are not followed.
        ("http/head.rs", "use crate::Config;\nuse crate::http::x;\n"),
    ]);
    let graph = graph(&sources);
    assert_eq!(
        edges(&graph),
        [
            ("conn", "http"),
            ("proxy", "conn"),
            ("proxy", "http"),
            ("server", "http"),
            ("server", "proxy"),
        ]
    );
    let http_refs: Vec<(&str, usize)> = graph[&("proxy".into(), "http".into())]
        .iter()
        .map(|r| (r.file.as_str(), r.line))
        .collect();
    assert_eq!(http_refs, [("src/proxy.rs", 3), ("src/proxy.rs", 5)]);
    assert!(cycles(&graph).is_empty(), "{:?}", cycles(&graph));
}

#[test]
fn a_cycle_is_found_and_reported_with_each_edges_file_and_line() {
    let sources = tree(&[
        ("main.rs", ""),
        ("proxy.rs", "use crate::{http::Head, server::Worker};\n"),
        (
            "server/mod.rs",
            "\n\npub fn f() { super::proxy::forward() }\n",
        ),
        ("http/mod.rs", "pub struct Head;\n"),
    ]);
    let graph = graph(&sources);
    let cycles = cycles(&graph);
    assert_eq!(cycles, [vec!["proxy".to_string(), "server".to_string()]]);
    let text = report(&graph, &cycles);
    assert!(text.contains("cycle: proxy → server → proxy"), "{text}");
    assert!(
        text.contains("src/proxy.rs:1  use crate::{http::Head, server::Worker};"),
        "{text}"
    );
    assert!(
        text.contains("src/server/mod.rs:3  pub fn f() { super::proxy::forward() }"),
        "{text}"
    );
}

#[test]
fn longer_cycles_and_separate_cycles_are_each_reported_once() {
    let sources = tree(&[
        ("a.rs", "use crate::b::X;\n"),
        ("b/mod.rs", "use crate::c::X;\n"),
        ("c/mod.rs", "use crate::a::X;\n"),
        ("d.rs", "use crate::e::X;\n"),
        ("e.rs", "use crate::{d};\n"),
        ("f.rs", "use crate::a::X;\n"),
    ]);
    let cycles = cycles(&graph(&sources));
    assert_eq!(
        cycles,
        [
            vec!["a".to_string(), "b".to_string(), "c".to_string()],
            vec!["d".to_string(), "e".to_string()],
        ]
    );
}
