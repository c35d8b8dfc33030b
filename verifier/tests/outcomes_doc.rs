//! docs/FORMAT.md §9.2 documents exactly the finding kinds of the one table in
//! `sealtrail_verifier::findings`: a kind added without its documentation (or documented
//! and gone) fails here.

use std::collections::BTreeSet;

use sealtrail_verifier::FindingKind;

fn documented_kinds() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let start = text
        .find("\n## 9. ")
        .expect("FORMAT.md has a section 9 (verification outcomes)");
    let section = &text[start + 1..];
    // Section 9 runs to the next level-2 heading, if any.
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    section
        .lines()
        .filter_map(|l| l.strip_prefix("#### `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

#[test]
fn format_section_9_documents_exactly_the_finding_kinds() {
    let code: BTreeSet<String> = FindingKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    let docs = documented_kinds();
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let stale: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "kinds without a §9.2 entry: {undocumented:?}; §9.2 entries with no kind: {stale:?}"
    );
    assert_eq!(code.len(), FindingKind::ALL.len(), "a name used twice");
}

/// The kinds docs/FORMAT.md §8.6 says `search` raises are those of
/// `sealtrail_verifier::search::SEARCH_KINDS`.
#[test]
fn format_section_8_6_lists_exactly_the_search_kinds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let start = text.find("### 8.6 ").expect("FORMAT.md has §8.6");
    let section = &text[start..];
    let section = &section[..section[4..].find("\n##").map_or(section.len(), |e| e + 4)];
    let list = section
        .split("raised by `search` for the segments it read:")
        .nth(1)
        .expect("§8.6 lists the kinds search raises");
    let list = &list[..list.find('.').expect("the list ends with a period")];
    let documented: BTreeSet<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let code: BTreeSet<String> = sealtrail_verifier::search::SEARCH_KINDS
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(documented, code);
}
