//! Crash safety of the signer: 20 SIGKILLs at random moments while several clients append
//! continuously. Afterwards no index was handed out twice, every answered append proves
//! into the final tree, and every checkpoint any client saw is consistent with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::Rng as _;
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_ingester::signer_client::connect;
use sealtrail_proto::v1::{AppendRequest, ConsistencyProofRequest};

const KILLS: usize = 20;
const CLIENTS: usize = 4;

/// An answered append.
struct Answer {
    first: u64,
    leaves: Vec<Hash>,
    checkpoint: SignedCheckpoint,
    proofs: Vec<Vec<Hash>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_answered() {
    let mut h = Harness::start().await;
    h.stop_signer().await; // replaced by a real process, killed for real
    let child = Arc::new(Mutex::new(spawn_signer(&h)));
    wait_signer(&h).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let cfg = h.signer_client_config();
        let (stop, answers) = (stop.clone(), answers.clone());
        clients.push(tokio::spawn(async move {
            let mut client = connect(&cfg).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let count = rand::thread_rng().gen_range(1..=40);
                let leaves: Vec<Hash> = (0..count)
                    .map(|i| {
                        merkle::leaf_hash(format!("client {c} append {n} leaf {i}").as_bytes())
                    })
                    .collect();
                n += 1;
                let req = AppendRequest {
                    leaf_hashes: leaves.iter().map(|l| l.to_vec().into()).collect(),
                };
                match client.append(req).await {
                    Ok(resp) => {
                        let r = resp.into_inner();
                        answers.lock().unwrap().push(Answer {
                            first: r.first_index,
                            leaves,
                            checkpoint: SignedCheckpoint::parse(&r.checkpoint).unwrap(),
                            proofs: r
                                .proofs
                                .into_iter()
                                .map(|p| {
                                    p.hashes
                                        .into_iter()
                                        .map(|h| h[..].try_into().unwrap())
                                        .collect()
                                })
                                .collect(),
                        });
                    }
                    // The signer is down or restarting: that append was not answered.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }

    let mut answered_before_kill = Vec::new();
    for _ in 0..KILLS {
        let pause = rand::thread_rng().gen_range(20..250);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        {
            let mut c = child.lock().unwrap();
            c.kill().unwrap(); // SIGKILL, at whatever moment the signer is in
            c.wait().unwrap();
        }
        answered_before_kill.push(answers.lock().unwrap().len());
        *child.lock().unwrap() = spawn_signer(&h);
        wait_signer(&h).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert!(
        answers.len() > KILLS,
        "too few appends answered to mean anything: {}",
        answers.len()
    );
    // Progress across kills: appends were answered between most kills.
    answered_before_kill.dedup();
    assert!(
        answered_before_kill.len() > KILLS / 2,
        "{answered_before_kill:?}"
    );

    let final_cp = h.latest_checkpoint().await.unwrap();
    let final_size = final_cp.checkpoint.size;

    // No index handed out twice.
    let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
    for (a, ans) in answers.iter().enumerate() {
        for i in ans.first..ans.first + ans.leaves.len() as u64 {
            assert!(owner.insert(i, a).is_none(), "index {i} answered twice");
            assert!(i < final_size, "answered index {i} beyond the final tree");
        }
    }

    // Every checkpoint seen: one per size, consistent with the final one; every answered
    // leaf proves into its checkpoint, hence (by consistency) into the final tree.
    let mut verifier = {
        let mut cfg = h.signer_client_config();
        cfg.cert = h.pki.verifier_client_cert.clone();
        cfg.key = h.pki.verifier_client_key.clone();
        connect(&cfg).unwrap()
    };
    let mut by_size: HashMap<u64, SignedCheckpoint> = HashMap::new();
    for ans in &answers {
        let cp = &ans.checkpoint.checkpoint;
        if let Some(seen) = by_size.get(&cp.size) {
            assert_eq!(
                seen.text(),
                ans.checkpoint.text(),
                "two checkpoints of size {}",
                cp.size
            );
        }
        by_size.insert(cp.size, ans.checkpoint.clone());
        assert!(matches!(
            h.trust.verify(&ans.checkpoint),
            sealtrail_core::trust::SignatureVerdict::Trusted { .. }
        ));
        for (j, leaf) in ans.leaves.iter().enumerate() {
            merkle::verify_inclusion(
                ans.first + j as u64,
                cp.size,
                leaf,
                &ans.proofs[j],
                &cp.root,
            )
            .unwrap();
        }
    }
    for (size, cp) in &by_size {
        let proof: Vec<Hash> = verifier
            .consistency_proof(ConsistencyProofRequest {
                old_size: *size,
                new_size: final_size,
            })
            .await
            .unwrap()
            .into_inner()
            .hashes
            .into_iter()
            .map(|h| h.try_into().unwrap())
            .collect();
        merkle::verify_consistency(
            *size,
            final_size,
            &cp.checkpoint.root,
            &final_cp.checkpoint.root,
            &proof,
        )
        .unwrap_or_else(|e| {
            panic!("checkpoint of size {size} inconsistent with the final tree: {e}")
        });
    }

    child.lock().unwrap().kill().unwrap();
    child.lock().unwrap().wait().unwrap();

    // The signer's own record: one chain, sizes strictly increasing, each linked to the
    // one before, the newest being the final checkpoint.
    let state = sealtrail_signer::state::State::open(&h.state_dir).unwrap();
    let all = state.all_checkpoints().unwrap();
    for pair in all.windows(2) {
        assert!(pair[1].checkpoint.size > pair[0].checkpoint.size);
        assert_eq!(pair[1].checkpoint.prev, Some(pair[0].hash()));
    }
    assert_eq!(
        all.last().map(SignedCheckpoint::text),
        Some(final_cp.text())
    );
    eprintln!(
        "{KILLS} SIGKILLs: {} appends answered, {} leaves, {} checkpoints signed, final size {final_size}",
        answers.len(),
        owner.len(),
        all.len()
    );
    drop(state);
    h.shutdown().await;
}
