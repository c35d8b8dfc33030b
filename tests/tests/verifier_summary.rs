//! The summary says what an INTACT verdict covers: up to which checkpoint, and what vouches
//! for the tail after it — the signer, the state of an earlier run, or nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sealtrail_verifier::{Options, TailReference, verify_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_names_the_tail_reference_in_each_case() {
    let h = Harness::start().await;
    let lines = event_lines();
    replay(&h, &lines[..120], 40).await;
    let size = h.tree_size().await;
    let store = h.store();

    // Nothing: the store alone cannot show a cut tail, and the summary says so.
    let alone = verify_store(&store, &h.trust, &Options::default())
        .await
        .unwrap();
    assert!(alone.intact(), "{}", alone.summary());
    assert_eq!(alone.tail_reference, TailReference::Nothing);
    let verified = alone.verified.expect("a verified checkpoint");
    assert_eq!(verified.size, size);
    let text = alone.summary();
    assert!(
        text.contains(&format!("INTACT up to checkpoint {size} (")),
        "{text}"
    );
    assert!(
        text.contains(
            "vouched for by: nothing (a cut tail would not show: pass --signer or --state)"
        ),
        "{text}"
    );

    // The signer's latest checkpoint.
    let with_signer = verify_store(
        &store,
        &h.trust,
        &Options {
            signer: Some(signer_of(&h)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(with_signer.intact(), "{}", with_signer.summary());
    assert!(
        matches!(with_signer.tail_reference, TailReference::Signer { size: s, .. } if s == size),
        "{:?}",
        with_signer.tail_reference
    );
    let text = with_signer.summary();
    assert!(
        text.contains(&format!(
            "vouched for by: the signer's latest checkpoint (size {size}, "
        )),
        "{text}"
    );

    // The state of an earlier run (no signer).
    let state = alone.state.clone().expect("a state after an intact run");
    replay(&h, &lines[120..], 40).await;
    let resumed = verify_store(
        &store,
        &h.trust,
        &Options {
            state: Some(state),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(resumed.intact(), "{}", resumed.summary());
    assert!(
        matches!(resumed.tail_reference, TailReference::State { size: s, .. } if s == size),
        "{:?}",
        resumed.tail_reference
    );
    let text = resumed.summary();
    assert!(
        text.contains("vouched for by: the state file of "),
        "{text}"
    );
    assert!(
        text.contains(&format!("(checkpoint of size {size})")),
        "{text}"
    );
    h.shutdown().await;
}
