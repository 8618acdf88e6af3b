//! Rewrites the merged reports (`summary.{txt,json}`, `report.html`, the side tables) from
//! every shard in `target/crossval/shards/`, and checks that they hold every shard's rows.
//!
//! Each test process merges as it goes; this is the last step where the suite ran in
//! pieces: under cargo-nextest (one process per test, run in parallel, so two processes
//! finishing together may each miss the other's shard) and across machines
//! (`--partition count:K/N`, shards gathered into one folder afterwards). Run it after
//! them: `cargo test -p bitnet-crossval --features crossval,integration-tests --test
//! merge_reports`.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use std::collections::BTreeSet;

use bitnet_crossval::report::{refresh_merged, report_dir};

#[test]
fn the_merged_summary_holds_every_shards_rows() {
    refresh_merged().expect("rewrite target/crossval from its shards");
    let dir = report_dir();
    let cases = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("case")?.as_str().map(str::to_owned))
            .collect()
    };
    let mut from_shards = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("shards")).expect("target/crossval/shards") {
        let path = entry.expect("shard entry").path();
        if path.extension().is_some_and(|x| x == "json") {
            let shard: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read shard"))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            from_shards.extend(cases(&shard["rows"]));
        }
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
            .expect("summary.json is JSON");
    assert_eq!(cases(&summary), from_shards);
}
