//! Incremental runs do not trust an object only because its size is unchanged: a
//! same-length edit of a verified segment is reported, a mere metadata change is not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::*;
use sealtrail_store::LocalDirStore;
use sealtrail_verifier::{FindingKind, Options, verify_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_length_edit_after_a_verified_run_is_reported() {
    let h = Harness::start().await;
    replay(&h, &event_lines(), 40).await;
    let store = LocalDirStore::open(&h.store_dir).unwrap();
    let first = verify_store(&store, &h.trust, &Options::default())
        .await
        .unwrap();
    assert!(first.intact(), "{}", first.summary());
    let state = first.state.clone().expect("a state after an intact run");

    let segs = segments(&h.store_dir);
    let (touched, edited) = (&segs[0], &segs[segs.len() - 1]);
    // Metadata only (the change time moves, the bytes do not): still intact.
    std::fs::set_permissions(touched, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A same-length edit: one letter's case inside an event.
    std::fs::set_permissions(edited, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(edited).unwrap();
    let at = bytes.windows(8).rposition(|w| w == b"\"verb\":\"").unwrap() + 8;
    bytes[at] ^= 0x20;
    std::fs::write(edited, &bytes).unwrap();

    let options = Options {
        state: Some(state),
        ..Options::default()
    };
    let r = verify_store(&store, &h.trust, &options).await.unwrap();
    let key = key_of(&h.store_dir, edited);
    assert_eq!(r.findings.len(), 1, "{}", r.summary());
    assert_eq!(r.findings[0].kind, FindingKind::ObjectChanged);
    assert_eq!(r.findings[0].object.as_deref(), Some(key.as_str()));
    h.shutdown().await;
}
