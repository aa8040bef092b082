//! Docs that run: every shell, Python and Ruby example of README.md and
//! docs/*.md, and the shell examples of the client READMEs, through
//! `doc_runner`, one test (one server) per file; and
//! the docs' tables checked against the code they describe.

use crate::doc_runner::{doc_files, run_doc};

/// One test per doc, and the list of docs they cover.
macro_rules! docs {
    ($($name:ident: $file:literal,)*) => {
        /// Every doc with a test below.
        const COVERED: &[&str] = &[$($file),*];
        $(
            #[test]
            fn $name() {
                run_doc($file);
            }
        )*
    };
}

docs! {
    readme: "README.md",
    api: "docs/API.md",
    architecture: "docs/ARCHITECTURE.md",
    deployment: "docs/DEPLOYMENT.md",
    etcd: "docs/ETCD.md",
    operations: "docs/OPERATIONS.md",
    performance: "docs/PERFORMANCE.md",
    storage: "docs/STORAGE.md",
    python_readme: "clients/python/README.md",
    ruby_readme: "clients/ruby/README.md",
}

#[test]
fn every_doc_is_run() {
    for file in doc_files() {
        assert!(
            COVERED.contains(&file.as_str()),
            "{file} has no test: add `name: \"{file}\",` to docs! in tests/it/docs.rs"
        );
    }
}

#[test]
fn api_md_lists_every_rpc_of_the_full_api() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = std::fs::read_to_string(root.join("proto/keyvalue/v1/kv.proto")).unwrap();
    let api = std::fs::read_to_string(root.join("docs/API.md")).unwrap();
    let service = proto
        .split("service KV {")
        .nth(1)
        .expect("service KV in kv.proto");
    let service = &service[..service.find("\n}").expect("the end of service KV")];
    let rpcs: Vec<&str> = service
        .lines()
        .filter_map(|line| line.trim().strip_prefix("rpc "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect();
    assert!(rpcs.contains(&"Put"), "{rpcs:?}");
    for rpc in rpcs {
        assert!(
            api.contains(&format!("\n| `{rpc}` |")),
            "docs/API.md's table of RPCs has no row for {rpc}"
        );
    }
}
