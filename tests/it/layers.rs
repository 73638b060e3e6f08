//! The library's layers point down only: each top-level module may use
//! only the modules of lower layers, and the sans-IO leaves use no
//! runtime, no metrics registry and no file system. Read off the source
//! (every `crate::` path outside comments), so a change that makes a
//! layer point up fails here instead of waiting for a reviewer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each module and its layer: a module may use those of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("crypto", 0),
    ("number", 0),
    ("slots", 0),
    ("shards", 1),
    ("deadlines", 0),
    ("keys", 1),
    ("media", 1),
    ("telemetry", 2),
    ("sip", 2),
    ("config", 3),
    ("incident", 3),
    ("guard", 4),
    ("agent", 4),
    ("cdr", 4),
    ("calls", 5),
    ("admin", 6),
    ("daemon", 7),
    ("demo", 8),
    ("loadgen", 8),
];

/// The crate root and the command line, above every layer.
const TOP: &[&str] = &["lib", "main", "cli"];

/// The sans-IO leaves, and the one file of theirs that does I/O (the SIP
/// transport, which the driver owns).
const SANS_IO: &[&str] = &["crypto", "number", "slots", "deadlines", "media", "sip"];
const IO_FILES: &[&str] = &["sip/transport.rs"];
const IO_WORDS: &[&str] = &[
    "tokio::",
    "prometheus::",
    "std::fs",
    "UdpSocket",
    "TcpStream",
];

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("source directory") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (doc links may point anywhere).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a source names through `crate::`, nested
/// groups (`crate::{a::{x, y}, b}`) included.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.insert(ident(rest).to_string());
            continue;
        };
        // The names at depth 1 of the group, each the first segment of
        // its path.
        let (mut depth, mut first) = (1, true);
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => first = true,
                c if first && (c.is_alphanumeric() || c == '_') => {
                    out.insert(ident(&group[k..]).to_string());
                    first = false;
                }
                _ => {}
            }
        }
    }
    out
}

/// The identifier `s` starts with.
fn ident(s: &str) -> &str {
    s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("")
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

#[test]
fn layers_point_down_and_the_leaves_do_no_io() {
    let root = source_root();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(all.len() > 50, "the sources were found: {}", all.len());
    let mut up = Vec::new();
    let mut io = Vec::new();
    for path in &all {
        let rel = path.strip_prefix(&root).expect("under the root");
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        let module = rel_s
            .split('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".rs");
        let Some(mine) = layer(module) else {
            // The crate's root and the command line are the top, using
            // anything; a new module must be given its layer.
            assert!(
                TOP.contains(&module),
                "{rel_s}: module {module} has no layer"
            );
            continue;
        };
        let text = code(&std::fs::read_to_string(path).expect("readable"));
        for used in uses(&text) {
            if let Some(theirs) = layer(&used) {
                if used != module && theirs >= mine {
                    up.push(format!("{rel_s} uses {used}"));
                }
            }
        }
        if SANS_IO.contains(&module) && !IO_FILES.contains(&rel_s.as_str()) {
            for w in IO_WORDS {
                if text.contains(w) {
                    io.push(format!("{rel_s} uses {w}"));
                }
            }
        }
    }
    assert!(up.is_empty(), "layers pointing up or sideways: {up:#?}");
    assert!(io.is_empty(), "I/O in the sans-IO leaves: {io:#?}");
}

#[test]
fn the_reader_finds_every_form_of_use() {
    let text = "use crate::{sip::x, media};\nlet a = crate::calls::Core::new();\n// crate::admin\n\
                use crate::{\n    agent::{a, b},\n    cdr,\n};\n";
    let found = uses(&code(text));
    let want: BTreeSet<String> = ["sip", "media", "calls", "agent", "cdr"]
        .map(String::from)
        .into();
    assert_eq!(found, want);
}
